"""ChdbHttpServer proven through the official clickhouse_connect HTTP client, against real chdb."""

from __future__ import annotations

import datetime as dt
import urllib.request

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from poa_stream.sinks.ch_http import ChdbHttpServer

N = 10_000
COLUMNS = ["id", "ts", "tags", "kind", "n", "x", "note"]
DDL = """CREATE TABLE attr.events (
    id UInt64, ts DateTime64(3, 'UTC'), tags Array(String), kind LowCardinality(String),
    n Int64, x Float64, note Nullable(String)
) ENGINE = MergeTree ORDER BY id"""
T0 = dt.datetime(2024, 1, 1)  # naive UTC: clickhouse_connect drops tzinfo when the column tz is the server's


def make_rows(n: int = N) -> list[tuple]:
    return [
        (2**63 + i, T0 + dt.timedelta(milliseconds=1001 * i), [f"t{i % 3}"] * (i % 4), f"k{i % 5}",
         7 * i - 5 * 10**12, i / 8, None if i % 7 == 0 else f"note-{i}")
        for i in range(n)
    ]


def connect(server: ChdbHttpServer, compress=True, **kwargs):
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, username="default", password="", compress=compress, **kwargs
    )


@pytest.fixture
def server(ch_http):
    """The session's server (chdb runs one engine per process: see tests/conftest.py)."""
    return ch_http


def create_schema(client) -> None:
    client.command("DROP DATABASE IF EXISTS attr")
    client.command("CREATE DATABASE attr")
    client.command(DDL)


def test_ping_and_root(server):
    for path in ("/ping", "/"):
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}") as resp:
            assert resp.read() == b"Ok.\n"


@pytest.mark.parametrize("compress", [True, False, "zstd", "gzip"], ids=["lz4-default", "plain", "zstd", "gzip"])
def test_insert_and_read_back(server, compress):
    client = connect(server, compress)
    try:
        assert client.server_version and client.command("SELECT 1 + 1") == 2
        create_schema(client)
        rows = make_rows()
        summary = client.insert("attr.events", rows, column_names=COLUMNS)
        assert summary.written_rows == N

        stats = client.query(
            "SELECT count(), sum(n), sum(toInt128(id)), sum(x), countIf(note IS NULL), sum(length(tags)),"
            " uniqExact(kind), min(ts), max(ts) FROM attr.events"
        ).result_rows[0]
        assert stats == (
            N, sum(r[4] for r in rows), sum(r[0] for r in rows), sum(r[5] for r in rows),
            sum(r[6] is None for r in rows), sum(len(r[2]) for r in rows), 5, rows[0][1], rows[-1][1],
        )
        result = client.query("SELECT * FROM attr.events ORDER BY id")
        assert result.column_names == tuple(COLUMNS)
        assert result.result_rows == rows  # every value of every row survives the round trip

        by_kind = client.query("SELECT kind, count() AS c FROM attr.events GROUP BY kind ORDER BY kind")
        named = list(by_kind.named_results())
        assert named == [{"kind": f"k{k}", "c": N // 5} for k in range(5)]
        with_t1 = client.command("SELECT count() FROM attr.events WHERE has(tags, 't1')")
        assert with_t1 == sum("t1" in r[2] for r in rows)
    finally:
        client.close()


def test_command_values_database_params_and_session(server):
    client = connect(server)
    create_schema(client)
    client.command("INSERT INTO attr.events (id, kind, note) VALUES (1, 'a', NULL), (2, 'b', 'x')")
    scoped = connect(server, database="attr")  # `database` URL param -> unqualified names resolve
    try:
        assert scoped.command("SELECT count() FROM events") == 2
        assert scoped.query("SELECT id, note FROM events ORDER BY id").result_rows == [(1, None), (2, "x")]
        bound = scoped.query("SELECT {a:Int64} * 2 AS v, {s:String} AS s", parameters={"a": 21, "s": "it's"})
        assert bound.result_rows == [(42, "it's")]  # server-side binding via param_* URL params
        assert scoped.command("SELECT getSetting('async_insert')") == "false"
        scoped.command("SET max_threads = 3")  # persists for this client's session only
        assert scoped.command("SELECT getSetting('max_threads')") == 3
        assert client.command("SELECT getSetting('max_threads')") != 3
    finally:
        scoped.close()
        client.close()


def test_errors_surface_as_database_error(server):
    client = connect(server)
    try:
        with pytest.raises(DatabaseError) as err:
            client.query("SELECT * FROM default.missing_table")
        assert err.value.code == 60 and "UNKNOWN_TABLE" in str(err.value)
        with pytest.raises(DatabaseError, match="Syntax error"):
            client.command("SELEC 1")
        assert client.command("SELECT 7") == 7  # the connection and server survive errors
    finally:
        client.close()


PERSIST_SCRIPT = """
import importlib.util
import sys
from poa_stream.sinks.ch_http import ChdbHttpServer
spec = importlib.util.spec_from_file_location("ch_http_test", sys.argv[2])
helpers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helpers)
COLUMNS, connect, create_schema, make_rows = helpers.COLUMNS, helpers.connect, helpers.create_schema, helpers.make_rows
store, rows = sys.argv[1], make_rows(1_000)
with ChdbHttpServer(store) as first:
    client = connect(first)
    create_schema(client)
    client.insert("attr.events", rows, column_names=COLUMNS)
    client.close()
with ChdbHttpServer(store) as second:
    client = connect(second, compress=False)
    assert client.query("SELECT * FROM attr.events ORDER BY id").result_rows == rows
    client.close()
print("persisted")
"""


def test_data_persists_across_restart(tmp_path):
    # chdb binds one data path per process, but releases it once every connection is closed,
    # so a second server on the same path sees the first one's data. Run in a fresh process:
    # this test process already holds the session's engine.
    import subprocess
    import sys
    from pathlib import Path
    out = subprocess.run([sys.executable, "-c", PERSIST_SCRIPT, str(tmp_path / "store"),
                          str(Path(__file__))], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "persisted"
