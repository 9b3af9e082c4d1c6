"""The Faust worker against the real Kafka broker, writing through clickhouse-connect
(real HTTP) into chdb, or into its own embedded chdb store. Compared with the
replay path on the same events: streaming and replay must agree exactly."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from support.events_factory import scenario, usage
from support.worker import WorkerProcess

from poa.kafka_local import reset_topics
from processors.core import Core, Result
from processors.replay import step
from streams.producer import EventProducer

pytestmark = pytest.mark.kafka


def offline(settings, records) -> Result:
    core, out = Core(settings), Result()
    for topic, raw in records:
        out.extend(step(core, topic, raw))
    out.extend(core.release(None))
    return out


def produce(bootstrap: str, records) -> None:
    with EventProducer(bootstrap) as p:
        for topic, raw in records:
            try:
                key = json.loads(raw).get("contribution_id") or json.loads(raw).get("model_id")
            except ValueError:
                key = None
            p.send_raw(topic, raw, key=key.encode() if key else None)


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


def test_worker_with_embedded_store_then_poa_sql(topics_fresh, settings, tmp_path):
    records = scenario()
    expected = offline(settings, records)
    produce(topics_fresh, records)
    store = tmp_path / "store"
    w = WorkerProcess(tmp_path / "w", POA_KAFKA_BOOTSTRAP=topics_fresh, POA_STORE_DIR=str(store),
                      POA_WORKER_ID="poa-test-" + uuid.uuid4().hex[:8]).start()
    n_events = len(expected.rows["events"])
    try:
        w.wait_until(lambda: w.status().get("processed", 0) >= n_events and w.status().get("buffered") == 0,
                     what=f"{n_events} processed events")
    finally:
        assert w.stop() == 0, w.log_tail()
    out = subprocess.run([sys.executable, "-m", "poa.cli", "sql", "--store", str(store),
                          "SELECT role, sum(amount) AS amount FROM reward_ledger GROUP BY role "
                          "ORDER BY role FORMAT JSONEachRow"], capture_output=True, text=True, check=True)
    got = {r["role"]: int(r["amount"]) for r in map(json.loads, out.stdout.splitlines())}
    want: dict[str, int] = {}
    for r in expected.rows["reward_ledger"]:
        want[r["role"]] = want.get(r["role"], 0) + r["amount"]
    assert got == want
