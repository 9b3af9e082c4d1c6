"""The real worker's guards, against the real broker and the HTTP engine: a poison event of
each type is quarantined while the worker keeps going; a second worker on the same store
refuses; a paused worker that was replaced stops without writing; a worker configured with
another ledger policy than the store's refuses to start and names the differences."""
from __future__ import annotations

import signal
import time
import uuid

import pytest
from support.events_factory import scenario, usage
from support.worker import WorkerProcess

from poa_stream.kafka_local import reset_topics
from poa_stream.processors.replay import process_all
from poa_stream.streams.producer import produce_records

pytestmark = pytest.mark.kafka
LEDGER = "entry_id, epoch, account, role, source, amount, ref_event_id"


@pytest.fixture
def topics_fresh(kafka_bootstrap):
    reset_topics(kafka_bootstrap, 3)
    return kafka_bootstrap


def env_for(bootstrap, ch_http, sink, **extra) -> dict:
    return dict(POA_KAFKA_BOOTSTRAP=bootstrap, POA_STORE_ENGINE="http",
                POA_CLICKHOUSE_URL=f"http://127.0.0.1:{ch_http.port}",
                POA_CLICKHOUSE_DATABASE=sink.database, POA_WORKER_ID="poa-t-" + uuid.uuid4().hex[:8],
                **extra)


def ledger(sink):
    _, rows = sink.query(f"SELECT {LEDGER} FROM {sink.database}.reward_ledger ORDER BY entry_id")
    return rows


def expected(rows):
    return sorted(tuple(r[k] for k in LEDGER.split(", ")) for r in rows.get("reward_ledger", []))


def without(records, *ids):
    return [(t, r) for t, r in records if not any(f'"event_id": "{e}"'.encode() in r for e in ids)]


def test_poison_events_of_every_type_are_quarantined_by_the_worker(topics_fresh, ch_http, sink, settings, tmp_path):
    poison = ["e4", "e6", "e9", "e11"]  # a contribution, a validation, a model, a usage
    records = scenario()
    _, clean = process_all(settings, without(records, *poison))
    _, full = process_all(settings, records)
    produce_records(topics_fresh, records)
    env = env_for(topics_fresh, ch_http, sink, POA_FAILPOINTS=",".join(f"apply:{e}" for e in poison))
    db = sink.database
    n = len(full.rows["events"])
    w = WorkerProcess(tmp_path / "w", **env).start()
    try:
        w.wait_until(lambda: sink.scalar(f"SELECT count() FROM {db}.events") >= n
                     and w.status().get("buffered") == 0, what=f"{n} events")
        assert w.alive()
    finally:
        assert w.stop() == 0, w.log_tail()
    assert ledger(sink) == expected(clean.rows)
    _, q = sink.query(f"SELECT event_id FROM {db}.events WHERE status = 'quarantined' ORDER BY event_id")
    assert q == [(f"quarantine:{e}",) for e in sorted(poison)]
    _, dl = sink.query(f"SELECT event_id, payload FROM {db}.deadletter WHERE reason LIKE 'internal error%'")
    assert sorted(e for e, _ in dl) == sorted(poison) and all(f'"event_id":"{e}"' in p for e, p in dl)
    _, seqs = sink.query(f"SELECT seq FROM {db}.events ORDER BY seq")
    assert [s for (s,) in seqs] == list(range(1, n + 1))
    # a restart rebuilds from the log (quarantined events stay out) and goes on
    produce_records(topics_fresh, [("poa.usage", usage("late1", "rl", "m-base", 500, "fine", 40))])
    w2 = WorkerProcess(tmp_path / "w", **env).start()
    try:
        w2.wait_until(lambda: sink.scalar(f"SELECT count() FROM {db}.events") >= n + 1
                      and w2.status().get("buffered") == 0, what="the new event")
    finally:
        assert w2.stop() == 0, w2.log_tail()
    assert sink.scalar(f"SELECT sum(amount) FROM {db}.reward_ledger WHERE ref_event_id = 'late1'") == 500


def test_a_second_worker_on_the_same_store_refuses(topics_fresh, ch_http, sink, tmp_path):
    """The single topology: one worker per store (the scaled one welcomes a second worker to
    its group: test_scaled_kafka.py)."""
    env = env_for(topics_fresh, ch_http, sink, POA_WORKER_TOPOLOGY="single")
    a = WorkerProcess(tmp_path / "a", **env).start()
    try:
        a.wait_until(lambda: a.status().get("seq") is not None, what="worker a up")
        b = WorkerProcess(tmp_path / "b", **{**env, "POA_WORKER_INSTANCE_ID": "worker-1"}).start()
        b.proc.wait(120)
        assert b.proc.returncode not in (0, None)
        assert "is held by writer" in b.log_tail() and "generation 1" in b.log_tail()
        assert a.alive()
    finally:
        a.stop()


def test_a_replaced_worker_stops_without_writing(topics_fresh, ch_http, sink, settings, tmp_path):
    records = scenario()
    first, second = records[:8], records[8:]
    env = env_for(topics_fresh, ch_http, sink, POA_STORE_LEASE_TTL_S="3",
                  POA_WORKER_SESSION_TIMEOUT_S="6", POA_WORKER_TOPOLOGY="single")  # scaled: test_scaled_kafka.py
    db = sink.database
    produce_records(topics_fresh, first)
    a = WorkerProcess(tmp_path / "a", **env).start()
    b = None
    try:
        a.wait_until(lambda: (sink.scalar(f"SELECT count() FROM {db}.events") or 0) >= 6,
                     what="worker a processing")
        a.proc.send_signal(signal.SIGSTOP)  # paused: no heartbeat, no writes
        time.sleep(4.0)
        b = WorkerProcess(tmp_path / "b", **{**env, "POA_WORKER_INSTANCE_ID": "worker-1"}).start()
        b.wait_until(lambda: b.status().get("seq") is not None, timeout_s=120, what="worker b took over")
        produce_records(topics_fresh, second)
        a.proc.send_signal(signal.SIGCONT)
        a.proc.wait(60)
        assert a.proc.returncode == 70, a.log_tail()
        assert "writer lease lost" in a.log_tail()
        _, full = process_all(settings, records)
        n = len(full.rows["events"])
        b.wait_until(lambda: sink.scalar(f"SELECT count() FROM {db}.events") >= n
                     and b.status().get("buffered") == 0, timeout_s=180, what=f"{n} events by b")
    finally:
        if a.alive():
            a.proc.send_signal(signal.SIGCONT)
            a.stop()
        if b is not None:
            assert b.stop() == 0, b.log_tail()
    _, seqs = sink.query(f"SELECT seq FROM {db}.events ORDER BY seq")
    assert [s for (s,) in seqs] == list(range(1, len(seqs) + 1))  # one writer: one log
    assert ledger(sink) == expected(full.rows)
    assert sink.scalar(f"SELECT max(generation) FROM {db}.writer_lease") == 2


def test_a_worker_with_another_policy_refuses_to_start(topics_fresh, ch_http, sink, settings, tmp_path):
    records = scenario()[:6]
    produce_records(topics_fresh, records)
    env = env_for(topics_fresh, ch_http, sink)
    w = WorkerProcess(tmp_path / "w", **env).start()
    try:
        w.wait_until(lambda: sink.scalar(f"SELECT count() FROM {sink.database}.events") >= 6
                     and w.status().get("buffered") == 0, what="6 events")
    finally:
        assert w.stop() == 0
    drift = WorkerProcess(tmp_path / "w", **{**env, "POA_NEARDUP_THRESHOLD": "0.6",
                                             "POA_SHARE_OPERATOR_BPS": "1500",
                                             "POA_SHARE_PROTOCOL_BPS": "1000"}).start()
    drift.proc.wait(120)
    log = drift.log_tail()
    assert drift.proc.returncode not in (0, None)
    for d in ("neardup_threshold: 0.8 -> 0.6", "share_operator_bps: 2000 -> 1500",
              "share_protocol_bps: 500 -> 1000", "poa policy apply"):
        assert d in log, log
    assert sink.scalar(f"SELECT count() FROM {sink.database}.events") == 6


def test_an_impossible_value_stops_the_worker_before_acknowledging(topics_fresh, ch_http, sink, tmp_path):
    """A batch carrying a value no column can store (an epoch row with epoch -1, as a bug
    would write: before the bounds, an event dated 1969 did exactly this) was retried
    forever; now the worker stops at once (exit 70, one clear line) and nothing of the batch
    is written or acknowledged, so a restart meets the same stop."""
    from support.events_factory import contribution
    records = [("poa.contributions", contribution("d1", "c-1", "alice", "dn", "a first text here")),
               ("poa.contributions", contribution("d2", "c-2", "bob", "dn", "a later text here").replace(
                   b"2026-01-01T00:00:00Z", b"2026-01-02T00:00:00Z"))]
    produce_records(topics_fresh, records)
    env = env_for(topics_fresh, ch_http, sink, POA_FAILPOINTS="corrupt:epochs")
    for attempt in range(2):
        w = WorkerProcess(tmp_path / f"w{attempt}", **env).start()
        w.proc.wait(120)
        assert w.proc.returncode == 70, w.log_tail()
        assert "stopping: FatalSinkError: epochs.epoch: value -1" in w.log_tail()
        assert "does not fit UInt32" in w.status().get("fatal", "")
        assert sink.scalar(f"SELECT count() FROM {sink.database}.events") == 0


def test_event_time_is_bounded_by_the_broker_clock(topics_fresh, ch_http, sink, settings, tmp_path):
    """A contribution dated 2099 among 2026 events closed ~26,660 empty epochs and parked
    the emission supply in 2099; now the input topics stamp records with the broker's clock
    and the worker dead-letters an event dated more than an hour after its record."""
    from support.events_factory import contribution
    from kafka import KafkaProducer
    records = scenario()
    produce_records(topics_fresh, records[:4])
    forged = KafkaProducer(bootstrap_servers=topics_fresh)  # the attacker forges CreateTime too
    forged.send("poa.contributions", contribution("x2099", "cx", "eve", "legal-de", "from the future " * 9)
                .replace(b"2026-01-01T00:00:00Z", b"2099-01-01T00:00:00Z"),
                timestamp_ms=4070908800000).get(30)  # 2099-01-01: overridden by LogAppendTime
    forged.close()
    produce_records(topics_fresh, records[4:])
    env = env_for(topics_fresh, ch_http, sink)
    _, clean = process_all(settings, records)
    n = len(clean.rows["events"]) + 1
    db = sink.database
    w = WorkerProcess(tmp_path / "w", **env).start()
    try:
        w.wait_until(lambda: sink.scalar(f"SELECT count() FROM {db}.events") >= n
                     and w.status().get("buffered") == 0, what=f"{n} events")
    finally:
        assert w.stop() == 0, w.log_tail()
    _, dl = sink.query(f"SELECT reason FROM {db}.deadletter WHERE event_id = 'x2099'")
    assert "after its Kafka record's timestamp" in dl[0][0]
    assert sink.scalar(f"SELECT count() FROM {db}.epochs") == 0  # nothing closed by 2099
    assert ledger(sink) == expected(clean.rows)
