"""The Faust worker against the real Kafka broker, writing through clickhouse-connect
(real HTTP) into chdb, or into its own embedded chdb store. Compared with the
replay path on the same events: streaming and replay must agree exactly."""
from __future__ import annotations

import json
import os
import subprocess
from datetime import timezone
import sys
import uuid

import pytest
from support.events_factory import scenario, usage
from support.worker import WorkerProcess

from poa_stream.kafka_local import reset_topics
from poa_stream.processors.core import Result
from poa_stream.processors.replay import process_all
from poa_stream.streams.producer import produce_records

pytestmark = pytest.mark.kafka


def offline(settings, records) -> Result:
    return process_all(settings, records)[1]


def produce(bootstrap: str, records) -> None:
    produce_records(bootstrap, records)


@pytest.fixture
def topics_fresh(kafka_bootstrap):
    reset_topics(kafka_bootstrap, 3)
    return kafka_bootstrap


def ledger(sink):
    _, rows = sink.query(f"SELECT entry_id, account, role, amount, ref_event_id FROM "
                         f"{sink.database}.reward_ledger ORDER BY entry_id")
    return rows


def test_worker_over_http_matches_replay_and_ignores_redelivery(topics_fresh, ch_http, sink, settings, tmp_path):
    records = scenario()
    expected = offline(settings, records)
    produce(topics_fresh, records)
    group = "poa-test-" + uuid.uuid4().hex[:8]
    env = dict(POA_KAFKA_BOOTSTRAP=topics_fresh, POA_STORE_ENGINE="http",
               POA_CLICKHOUSE_URL=f"http://127.0.0.1:{ch_http.port}",
               POA_CLICKHOUSE_DATABASE=sink.database, POA_WORKER_ID=group)
    w = WorkerProcess(tmp_path / "w", **env).start()
    n_events = len(expected.rows["events"])
    db = sink.database
    try:
        w.wait_until(lambda: sink.scalar(f"SELECT count() FROM {db}.events") >= n_events
                     and w.status().get("buffered") == 0, what=f"{n_events} logged events")
    finally:
        assert w.stop() == 0, w.log_tail()
    want = sorted((r["entry_id"], r["account"], r["role"], r["amount"], r["ref_event_id"])
                  for r in expected.rows["reward_ledger"])
    assert ledger(sink) == want
    # every usage event's credits sum exactly to its fee
    assert sink.scalar(f"SELECT count() FROM (SELECT u.event_id, any(u.fee) f, sum(l.amount) s FROM {db}.usage u "
                       f"JOIN {db}.reward_ledger l ON l.ref_event_id = u.event_id GROUP BY u.event_id HAVING s != f)") == 0
    _, dl = sink.query(f"SELECT event_id, reason FROM {db}.deadletter ORDER BY seq")
    assert len(dl) == 3 and any("greater than or equal to 0" in r for _, r in dl)
    _, st = sink.query(f"SELECT contribution_id, status, duplicate_of FROM {db}.contributions FINAL ORDER BY contribution_id")
    assert ("c3", "duplicate", "c1") in st and ("c1", "accepted", "") in st
    assert sink.scalar(f"SELECT count() FROM {db}.events") == n_events

    # restart: a re-delivered event (and a new one) after a restart
    produce(topics_fresh, [records[10], ("poa.usage", usage("e99", "r99", "m-base", 77, "late new request", 30))])
    w2 = WorkerProcess(tmp_path / "w", **env).start()
    try:
        w2.wait_until(lambda: sink.scalar(f"SELECT count() FROM {db}.events") >= n_events + 1
                      and w2.status().get("buffered") == 0, what="the new event")
    finally:
        assert w2.stop() == 0
    assert w2.status()["redelivered"] >= 1
    assert ledger(sink) == sorted(want + [r for r in ledger(sink) if r[4] == "e99"])
    assert sink.scalar(f"SELECT sum(amount) FROM {db}.reward_ledger WHERE ref_event_id = 'e99'") == 77

    # a contributor follows their reward stream: `poa rewards tail` sums to the store's sum
    for account in ("alice", "op-base"):
        out = subprocess.run([sys.executable, "-m", "poa_stream.cli", "rewards", "tail", "--account", account,
                              "--no-follow", "--json"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "POA_KAFKA_BOOTSTRAP": topics_fresh}, check=True)
        credits = [json.loads(line) for line in out.stdout.splitlines()]
        assert credits and all(c["account"] == account for c in credits)
        assert sum(c["amount"] for c in credits) == sink.scalar(
            f"SELECT sum(amount) FROM {db}.reward_ledger WHERE account = '{account}'")
        # the text form: one line per credit however narrow the terminal, amounts in tokens
        lines = subprocess.run([sys.executable, "-m", "poa_stream.cli", "rewards", "tail", "--account", account,
                                "--no-follow"], capture_output=True, text=True, timeout=120, check=True,
                               env={**os.environ, "POA_KAFKA_BOOTSTRAP": topics_fresh, "COLUMNS": "40"}).stdout.splitlines()
        total = sum(c["amount"] for c in credits)
        assert len(lines) == len(credits) + 1 and f"({total:,} micro-units)" in lines[-1]
        assert all(c["ref_event_id"] in line for c, line in zip(credits, lines))

    # the pipeline-health panels run on the metrics this real worker wrote
    from datetime import timedelta
    from support.grafana_macros import expand
    from poa_stream.grafana import all_panels
    _, span = sink.query(f"SELECT min(ts), max(ts) FROM {db}.pipeline_metrics")
    t0, t1 = (t.replace(tzinfo=timezone.utc) for t in span[0])
    sink.use_database()
    try:
        for _, panel in all_panels():
            if "pipeline_metrics" in panel.sql:
                sql = expand(panel.sql, t0 - timedelta(minutes=5), t1 + timedelta(minutes=5), timedelta(seconds=10))
                cols, rows = sink.query(sql)
                assert cols == list(panel.columns) and rows, panel.title
    finally:
        sink.command("USE default")


def test_worker_with_embedded_store_then_poa_sql(topics_fresh, settings, tmp_path):
    """The worker holds its embedded store and serves it read-only over ClickHouse's HTTP
    interface: `poa sql` (which finds the endpoint by itself) and clickhouse-connect query
    it while it ingests; writes, DDL and file() are refused; the endpoint goes at stop."""
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import DatabaseError
    records = scenario()
    expected = offline(settings, records)
    half = len(records) // 2
    produce(topics_fresh, records[:half])
    store = tmp_path / "store"
    w = WorkerProcess(tmp_path / "w", POA_KAFKA_BOOTSTRAP=topics_fresh, POA_STORE_DIR=str(store),
                      POA_WORKER_ID="poa-test-" + uuid.uuid4().hex[:8]).start()
    n_events = len(expected.rows["events"])
    endpoint = store.with_name("store.sql.json")
    sql_env = {**os.environ, "POA_STORE_DIR": str(store)}
    try:
        w.wait_until(lambda: endpoint.exists() and w.status().get("processed", 0) > 0, what="the SQL endpoint")
        ep = json.loads(endpoint.read_text())
        client = clickhouse_connect.get_client(host="127.0.0.1", port=int(ep["url"].rsplit(":", 1)[1]),
                                               username=ep["user"], database="poa")
        seen = []
        for part in (records[half:], []):  # queries while the worker ingests the second half
            produce(topics_fresh, part) if part else None
            live = subprocess.run([sys.executable, "-m", "poa_stream.cli", "sql", "SELECT count() FROM events"],
                                  capture_output=True, text=True, env=sql_env, timeout=120)
            assert live.returncode == 0, live.stderr
            seen.append(int(live.stdout))
            assert client.query("SELECT count() FROM reward_ledger").result_rows[0][0] >= 0
        for bad in ("INSERT INTO reward_ledger (account) VALUES ('mallory')", "DROP TABLE reward_ledger",
                    "SELECT * FROM file('/etc/hostname', 'LineAsString')"):
            with pytest.raises(DatabaseError, match="READONLY|readonly"):
                client.command(bad)
        # ops probes on the same endpoint, scraped during the run (no credentials needed)
        import urllib.request
        health = json.loads(urllib.request.urlopen(ep["url"] + "/health", timeout=10).read())
        assert health["ok"] is True and health["loop_age_s"] < 30 and health["processed"] > 0
        w.wait_until(lambda: json.loads(urllib.request.urlopen(ep["url"] + "/ready", timeout=10).read())["ok"],
                     what="/ready")
        ready = json.loads(urllib.request.urlopen(ep["url"] + "/ready", timeout=10).read())
        assert ready["assigned"] and ready["restored"]
        where = subprocess.run([sys.executable, "-m", "poa_stream.cli", "store"], capture_output=True, text=True,
                               env=sql_env, timeout=60)
        assert "served read-only by the running worker" in where.stdout
        client.close()
        w.wait_until(lambda: w.status().get("processed", 0) >= n_events and w.status().get("buffered") == 0,
                     what=f"{n_events} processed events")
        assert seen[0] > 0 and seen == sorted(seen)
        # Prometheus scrape of the same run: counts match the replay, lag is read from the broker
        from prometheus_client.parser import text_string_to_metric_families
        ops = w.status()["ops_url"]

        def scrape() -> dict:
            text = urllib.request.urlopen(ops + "/metrics", timeout=10).read().decode()
            return {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for fam in text_string_to_metric_families(text) for s in fam.samples}
        w.wait_until(lambda: scrape().get(("poa_consumer_lag_total", ())) == 0, what="zero lag from the broker")
        m = scrape()
        want_dl = len(expected.rows["deadletter"])
        assert sum(v for (n, _), v in m.items() if n == "poa_deadletters_total") == want_dl > 0
        ok_events = sum(v for (n, lab), v in m.items() if n == "poa_events_total" and ("outcome", "deadletter") not in lab)
        assert ok_events == n_events and m[("poa_seq", ())] == n_events
        assert m[("poa_consumer_lag_up", ())] == 1 and m[("poa_ready", ())] == 1 and m[("poa_outbox_ready", ())] == 1
        assert m[("poa_batch_seconds_count", ())] > 0 and m[("poa_event_to_ledger_seconds_count", ())] > 0
        assert json.loads(urllib.request.urlopen(ops + "/health", timeout=10).read())["ok"] is True
    finally:
        assert w.stop() == 0, w.log_tail()
    assert not endpoint.exists()  # a stopped worker serves nothing; readers open the store again
    out = subprocess.run([sys.executable, "-m", "poa_stream.cli", "sql", "--store", str(store),
                          "SELECT role, sum(amount) AS amount FROM reward_ledger GROUP BY role "
                          "ORDER BY role FORMAT JSONEachRow"], capture_output=True, text=True, check=True)
    got = {r["role"]: int(r["amount"]) for r in map(json.loads, out.stdout.splitlines())}
    want: dict[str, int] = {}
    for r in expected.rows["reward_ledger"]:
        want[r["role"]] = want.get(r["role"], 0) + r["amount"]
    assert got == want


def hostile_messages(seed: int = 13, n: int = 120) -> list[tuple[str, bytes]]:
    import random
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            raw = rng.randbytes(rng.randint(0, 200))
        elif kind == 1:
            depth = rng.randint(30, 3000)
            raw = b"[" * depth + b"]" * depth
        elif kind == 2:
            raw = json.dumps({"event_id": f"h{i}", "type": "usage", "ts": "2026-01-01T00:00:00Z",
                              "request_id": "r", "model_id": "m", "fee": rng.choice([-1, 1.5, "7", None, True]),
                              "output": "x"}).encode()
        elif kind == 3:
            raw = json.dumps({"event_id": f"h{i}", "type": "contribution", "ts": "not a time"}).encode()
        elif kind == 4:
            raw = ("\ud800" + chr(rng.randint(0x80, 0x10FFFF))).encode("utf-8", "surrogatepass")
        else:
            raw = json.dumps({"event_id": f"h{i}", "type": "usage", "ts": "2026-01-01T00:00:00Z",
                              "request_id": "r", "model_id": "m", "fee": 1,
                              "output": "y" * ((1 << 20) + rng.randint(1, 1000))}).encode()
        out.append((rng.choice(["poa.usage", "poa.contributions", "poa.validations", "poa.models"]), raw))
    return out


def test_worker_survives_hostile_messages(topics_fresh, ch_http, sink, tmp_path):
    msgs = hostile_messages()
    produce(topics_fresh, msgs + msgs[:30])  # and some re-delivered
    distinct = len({m for m in msgs})
    env = dict(POA_KAFKA_BOOTSTRAP=topics_fresh, POA_STORE_ENGINE="http",
               POA_CLICKHOUSE_URL=f"http://127.0.0.1:{ch_http.port}",
               POA_CLICKHOUSE_DATABASE=sink.database, POA_WORKER_ID="poa-test-" + uuid.uuid4().hex[:8])
    w = WorkerProcess(tmp_path / "w", **env).start()
    db = sink.database
    try:
        w.wait_until(lambda: sink.scalar(f"SELECT count() FROM {db}.deadletter") >= distinct,
                     what=f"{distinct} dead letters")
        assert w.alive()
    finally:
        assert w.stop() == 0, w.log_tail()
    assert sink.scalar(f"SELECT count() FROM {db}.deadletter") == distinct
    assert sink.scalar(f"SELECT countIf(reason = '') FROM {db}.deadletter") == 0
    assert sink.scalar(f"SELECT count() FROM {db}.reward_ledger") == 0


def test_single_worker_is_not_held_back_by_ticks_at_the_end_of_its_partitions(topics_fresh, ch_http, sink,
                                                                             settings, tmp_path):
    """A scaled group on the same input topics leaves tick records (``poa-tick``) at the end
    of the partitions. The single topology skips them, but a partition whose last record is
    a tick is still caught up: everything is processed at once, not after the idle valve
    (set to 10 minutes here, so the test would time out)."""
    from kafka import KafkaProducer
    records = scenario()
    expected = offline(settings, records)
    produce(topics_fresh, records)
    producer = KafkaProducer(bootstrap_servers=topics_fresh)
    try:
        for topic, parts in (("poa.contributions", 3), ("poa.validations", 3), ("poa.models", 1), ("poa.usage", 3)):
            for p in range(parts):
                producer.send(topic, value=b"", partition=p, headers=[("poa-tick", b"2100-01-01T00:00:00+00:00")])
        producer.flush(60)
    finally:
        producer.close()
    env = dict(POA_KAFKA_BOOTSTRAP=topics_fresh, POA_STORE_ENGINE="http", POA_WORKER_TOPOLOGY="single",
               POA_CLICKHOUSE_URL=f"http://127.0.0.1:{ch_http.port}", POA_CLICKHOUSE_DATABASE=sink.database,
               POA_WORKER_ID="poa-test-" + uuid.uuid4().hex[:8], POA_WORKER_IDLE_RELEASE_S="600")
    w = WorkerProcess(tmp_path / "w", **env).start()
    n_events = len(expected.rows["events"])
    try:
        w.wait_until(lambda: sink.scalar(f"SELECT count() FROM {sink.database}.events") >= n_events
                     and w.status().get("buffered") == 0, timeout_s=120, what=f"{n_events} logged events")
    finally:
        assert w.stop() == 0, w.log_tail()
    assert ledger(sink) == sorted((r["entry_id"], r["account"], r["role"], r["amount"], r["ref_event_id"])
                                  for r in expected.rows["reward_ledger"])
