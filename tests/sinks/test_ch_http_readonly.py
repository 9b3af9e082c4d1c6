"""The worker's read-only SQL endpoint (sinks/ch_http.py, readonly=True, with credentials)
through clickhouse-connect over real HTTP, on the tests' chdb engine: formats,
parameters, compression, errors, refusals (writes, DDL, settings, host-reading table
functions), authentication, and queries running while rows are inserted."""
from __future__ import annotations

import threading

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from poa_stream.sinks.ch_http import ChdbHttpServer


@pytest.fixture(scope="module")
def ro(chdb_path):
    from poa_stream.sinks.chdb_sink import ChdbSink
    sink = ChdbSink(chdb_path, "ro_test")
    sink.command("CREATE DATABASE IF NOT EXISTS ro_test")
    sink.command("CREATE TABLE IF NOT EXISTS ro_test.t (id UInt64, s String) ENGINE = MergeTree ORDER BY id")
    sink.command("TRUNCATE TABLE ro_test.t")
    sink.command("INSERT INTO ro_test.t SELECT number, toString(number) FROM numbers(1000)")
    with ChdbHttpServer(chdb_path, readonly=True, user="reader", password="s3cret") as server:
        yield server, sink
    sink.command("USE default")
    sink.close()


def client(server, password="s3cret", **kw):
    return clickhouse_connect.get_client(host="127.0.0.1", port=server.port, username="reader", password=password,
                                         database="ro_test", **kw)


@pytest.mark.parametrize("compress", [True, False])
def test_reads_formats_and_parameters(ro, compress):
    server, _ = ro
    c = client(server, compress=compress)
    assert c.query("SELECT count(), sum(id) FROM t").result_rows == [(1000, 499500)]
    assert c.query("SELECT s FROM t WHERE id = {n:UInt64}", parameters={"n": 42}).result_rows == [("42",)]
    raw = c.raw_query("SELECT id, s FROM t ORDER BY id LIMIT 2", fmt="JSONEachRow")
    assert raw.decode().splitlines() == ['{"id":"0","s":"0"}', '{"id":"1","s":"1"}'] or \
        raw.decode().splitlines() == ['{"id":0,"s":"0"}', '{"id":1,"s":"1"}']
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE|Unknown table"):
        c.query("SELECT * FROM nope")
    assert c.command("SELECT 7") == 7  # errors leave the connection usable
    df = c.query_df("SELECT id, s FROM t WHERE id < 3 ORDER BY id")  # pandas, as analysts use it
    assert list(df.columns) == ["id", "s"] and df["id"].tolist() == [0, 1, 2]
    c.close()


@pytest.mark.parametrize("stmt", [
    "INSERT INTO t VALUES (5000, 'x')",
    "CREATE TABLE u (x Int8) ENGINE = Memory",
    "DROP TABLE t",
    "ALTER TABLE t DELETE WHERE 1",
    "SET readonly = 0",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
])
def test_writes_ddl_settings_and_host_table_functions_are_refused(ro, stmt):
    server, sink = ro
    c = client(server)
    with pytest.raises(DatabaseError, match="READONLY|readonly"):
        c.command(stmt)
    with pytest.raises(DatabaseError, match="READONLY|readonly"):
        c.insert("t", [(9000, "y")], column_names=["id", "s"])  # insert with data, refused before the engine
    c.close()
    assert sink.scalar("SELECT count() FROM ro_test.t") == 1000


def test_credentials_are_checked(ro):
    server, _ = ro
    with pytest.raises(DatabaseError, match="516|AUTHENTICATION"):
        client(server, password="wrong")
    import urllib.request
    assert urllib.request.urlopen(f"{server.url}/ping").read() == b"Ok.\n"  # health needs no password


def test_queries_during_ingestion(ro):
    """Readers on their own connections while the writer inserts: every answer is a count
    between the start and the end, never an error, and counts never go back."""
    server, sink = ro
    stop, errors, runs = threading.Event(), [], []

    def reader():
        c = client(server)
        seen: list[int] = []
        runs.append(seen)
        try:
            while not stop.is_set():
                seen.append(c.query("SELECT count() FROM t").result_rows[0][0])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            c.close()
    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for k in range(20):
        sink.command(f"INSERT INTO ro_test.t SELECT 10000 + {k} * 100 + number, 'w' FROM numbers(100)")
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(seen and seen == sorted(seen) and 1000 <= seen[0] and seen[-1] <= 3000 for seen in runs), runs


def test_probes_answer_without_credentials(chdb_path):
    import json
    import urllib.error
    import urllib.request
    state = {"ok": False}
    probes = {"/ready": lambda: (state["ok"], {"why": "test"}), "/boom": lambda: 1 / 0}
    with ChdbHttpServer(chdb_path, readonly=True, user="reader", password="pw", probes=probes) as server:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url + "/ready")
        assert e.value.code == 503 and json.loads(e.value.read()) == {"ok": False, "why": "test"}
        state["ok"] = True
        assert json.loads(urllib.request.urlopen(server.url + "/ready").read()) == {"ok": True, "why": "test"}
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url + "/boom")
        assert e.value.code == 503 and "ZeroDivisionError" in json.loads(e.value.read())["error"]
