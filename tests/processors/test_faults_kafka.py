"""Faults against the real broker: SIGKILL the worker at random points, restart the
broker mid-run. The final ledger must equal the uninterrupted one: same rows, same
sums, same epoch roots; the reward stream, read_committed, must hold every credit exactly
once (no entry_id twice) and equal it too."""
from __future__ import annotations

import json
import random
import signal
import time
import uuid
import warnings

import pytest
from support.kafka import local_kafka_settings
from support.worker import WorkerProcess

from poa_stream.kafka_local import LocalKafka, reset_topics
from poa_stream.scenario import generate
from poa_stream.processors.replay import process_all
from poa_stream.streams import topics
from poa_stream.streams.producer import produce_records

pytestmark = pytest.mark.kafka
SEED, SCALE = 5, 0.5


@pytest.fixture(scope="module")
def workload():
    return [(t, line.encode()) for t, line in generate(seed=SEED, scale=SCALE).records]


@pytest.fixture(scope="module")
def uninterrupted(workload, tmp_path_factory):
    """The replay path on the same messages, fully sorted in event-time order (the order an
    uninterrupted worker reaches by merging partitions): the reference ledger."""
    from poa_stream.settings import Settings
    core, out = process_all(Settings(home=tmp_path_factory.mktemp("ref"), order_lateness_s=1e10), workload)
    return core, out.rows


def ledger(sink):
    _, rows = sink.query(f"SELECT entry_id, epoch, account, role, source, amount, ref_event_id "
                         f"FROM {sink.database}.reward_ledger ORDER BY entry_id")
    return rows


def expected_ledger(rows):
    return sorted((r["entry_id"], r["epoch"], r["account"], r["role"], r["source"], r["amount"],
                   r["ref_event_id"]) for r in rows["reward_ledger"])


def stream_sums(bootstrap: str) -> dict[str, int]:
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    parts = [TopicPartition(topics.REWARDS, p) for p in c.partitions_for_topic(topics.REWARDS)]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    end = c.end_offsets(parts)
    seen, sums = set(), {}
    while any(c.position(tp) < end[tp] for tp in parts):
        for recs in c.poll(timeout_ms=500).values():
            for r in recs:
                credit = json.loads(r.value)
                assert r.key.decode() == credit["account"]
                assert credit["entry_id"] not in seen, f"published twice: {credit}"  # exactly once
                seen.add(credit["entry_id"])
                sums[credit["account"]] = sums.get(credit["account"], 0) + credit["amount"]
    c.close()
    return sums


def start(tmp_path, bootstrap, ch_http, sink, group, **env: str):
    env = {"POA_WORKER_SESSION_TIMEOUT_S": "8", **env}
    return WorkerProcess(tmp_path / "w", POA_KAFKA_BOOTSTRAP=bootstrap, POA_STORE_ENGINE="http",
                         POA_CLICKHOUSE_URL=f"http://127.0.0.1:{ch_http.port}",
                         POA_CLICKHOUSE_DATABASE=sink.database, POA_WORKER_ID=group, **env).start()


def check(sink, bootstrap, uninterrupted):
    core, rows = uninterrupted
    db = sink.database
    assert ledger(sink) == expected_ledger(rows)
    assert sink.scalar(f"SELECT count() - uniqExact(entry_id) FROM {db}.reward_ledger") == 0
    assert sink.scalar(f"SELECT count() FROM {db}.events") == core.seq
    _, roots = sink.query(f"SELECT epoch, merkle_root FROM {db}.epochs ORDER BY epoch")
    assert roots == [(e["epoch"], e["merkle_root"]) for e in rows["epochs"]]
    _, by_account = sink.query(f"SELECT account, sum(amount) FROM {db}.reward_ledger GROUP BY account")
    assert stream_sums(bootstrap) == dict(by_account)


def wait_done(w, sink, n):
    w.wait_until(lambda: sink.scalar(f"SELECT count() FROM {sink.database}.events") >= n
                 and w.status().get("buffered") == 0, timeout_s=300, what=f"{n} events")


def events_done(sink) -> int:
    return sink.scalar(f"SELECT count() FROM {sink.database}.events")


SINGLE = dict(POA_WORKER_BATCH_MAX="50", POA_WORKER_TOPOLOGY="single")


def poll_until(w, predicate, timeout_s: float) -> None:
    """Poll every 20 ms until ``predicate()``, the worker exits, or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and w.alive() and not predicate():
        time.sleep(0.02)


def test_sigkill_at_random_points(kafka_bootstrap, ch_http, sink, tmp_path, workload, uninterrupted):
    """Six SIGKILLs, placed by progress rather than by wall-clock time so that they land
    before the end on a fast machine too. Progress is the messages taken in (events
    committed + events buffered for event-time order, from the worker's status file).
    Every third kill lands in start-up (or its first batch); the others once a random
    10-35% of the remaining messages is taken in, plus a random delay so that some land
    inside the next batch. Batches of at most 50 messages per agent keep it fine-grained:
    the single topology (in the scaled one a sequence batch packs thousands of events; its
    own SIGKILL test is in test_scaled_kafka.py)."""
    reset_topics(kafka_bootstrap, 3)
    produce_records(kafka_bootstrap, workload)
    group = "poa-test-" + uuid.uuid4().hex[:8]
    rng = random.Random(SEED)
    n, total = uninterrupted[0].seq, len(workload)
    kills, mid_run, taken = 0, 0, 0

    def taken_in(w) -> int:
        st = w.status()
        return st.get("seq", 0) + st.get("buffered", 0)
    while kills < 6:
        before = events_done(sink)
        w = start(tmp_path, kafka_bootstrap, ch_http, sink, group, **SINGLE)
        if kills % 3 == 0:
            poll_until(w, lambda: w.status().get("batches", 0) >= 1, timeout_s=rng.uniform(0.3, 4.0))
        else:
            target = taken + int((total - taken) * rng.uniform(0.10, 0.35))
            poll_until(w, lambda: w.status().get("batches", 0) >= 1 and taken_in(w) >= target, timeout_s=120)
            time.sleep(rng.uniform(0.0, 0.15))
        batches, taken = w.status().get("batches", 0), max(taken, taken_in(w))
        rc = w.stop(signal.SIGKILL)
        done = events_done(sink)
        if rc != -signal.SIGKILL:  # it died on its own first: a fault too, but say so
            warnings.warn(f"worker exited by itself with {rc} before the kill:\n{w.log_tail(1500)}")
        kills += 1
        mid_run += batches >= 1 and done < n
        print(f"kill {kills}: after {batches} batches, {taken} of {total} messages taken in, "
              f"{before} -> {done} of {n} events committed")
        if done >= n:
            break
    w = start(tmp_path, kafka_bootstrap, ch_http, sink, group, **SINGLE)
    try:
        wait_done(w, sink, n)
    finally:
        assert w.stop() == 0
    assert kills == 6, f"the run finished after {kills} kills: the kill points did not spread"
    assert mid_run >= 3, f"only {mid_run} kills landed mid-run"
    check(sink, kafka_bootstrap, uninterrupted)
    replay_reproduces_roots(sink, tmp_path)


def replay_reproduces_roots(sink, tmp_path):
    """`poa replay --in-order` of the run's own log reproduces its ledger and epoch roots."""
    import subprocess
    import sys
    _, log = sink.query(f"SELECT payload FROM {sink.database}.events WHERE type != 'invalid' ORDER BY seq")
    path = tmp_path / "log.jsonl"
    path.write_text("".join(p + "\n" for (p,) in log))
    store = tmp_path / "replayed"
    subprocess.run([sys.executable, "-m", "poa_stream.cli", "replay", "--in-order", str(path), "--store", str(store)],
                   check=True, capture_output=True, timeout=600)

    def q(sql):
        out = subprocess.run([sys.executable, "-m", "poa_stream.cli", "sql", "--store", str(store), sql + " FORMAT TSV"],
                             check=True, capture_output=True, text=True, timeout=120)
        return out.stdout.splitlines()
    _, roots = sink.query(f"SELECT epoch, merkle_root FROM {sink.database}.epochs ORDER BY epoch")
    assert q("SELECT epoch, merkle_root FROM epochs ORDER BY epoch") == [f"{e}\t{r}" for e, r in roots]
    _, sums = sink.query(f"SELECT account, sum(amount) FROM {sink.database}.reward_ledger GROUP BY account ORDER BY account")
    assert q("SELECT account, sum(amount) FROM reward_ledger GROUP BY account ORDER BY account") == [f"{a}\t{n}" for a, n in sums]


def test_broker_restart_mid_run(kafka_bootstrap, ch_http, sink, tmp_path, workload, uninterrupted):
    s = local_kafka_settings()
    if kafka_bootstrap != f"127.0.0.1:{s.kafka_local_port}":
        pytest.skip("the broker is external: this test restarts the local one")
    reset_topics(kafka_bootstrap, 3)
    produce_records(kafka_bootstrap, workload)
    group = "poa-test-" + uuid.uuid4().hex[:8]
    w = start(tmp_path, kafka_bootstrap, ch_http, sink, group, POA_WORKER_BATCH_MAX="50")
    w.wait_until(lambda: sink.scalar(f"SELECT count() FROM {sink.database}.events") > 0,
                 timeout_s=120, what="the first batch")
    broker = LocalKafka(s)
    broker.stop()
    time.sleep(3)
    broker.start()
    n = uninterrupted[0].seq
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # a supervisor restarts a worker that gave up
        if not w.alive():
            w = start(tmp_path, kafka_bootstrap, ch_http, sink, group, POA_WORKER_BATCH_MAX="50")
        if sink.scalar(f"SELECT count() FROM {sink.database}.events") >= n and w.status().get("buffered") == 0:
            break
        time.sleep(1)
    assert w.stop() == 0
    check(sink, kafka_bootstrap, uninterrupted)


def group_members(bootstrap: str, group: str) -> list[tuple[str, str | None]]:
    """(member_id, group_instance_id) of the group's members, from the broker."""
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        g = admin.describe_groups([group]).get(group) or {}
        return [(m["member_id"], m["group_instance_id"]) for m in g.get("members", [])]
    finally:
        admin.close()


def test_restart_after_sigkill_does_not_wait_out_the_session(kafka_bootstrap, ch_http, sink, tmp_path, workload):
    """Static membership (POA_WORKER_INSTANCE_ID): with an 80 s session, a worker restarted
    after SIGKILL is back at work long before the session ends (dynamic membership waits it
    out: about 30 s at the default session, measured in bench/failover.py), as the same
    instance, the dead member replaced rather than left beside it."""
    reset_topics(kafka_bootstrap, 3)
    produce_records(kafka_bootstrap, workload)
    group = "poa-test-" + uuid.uuid4().hex[:8]
    env = dict(POA_WORKER_SESSION_TIMEOUT_S="80", POA_WORKER_BATCH_MAX="50")
    w = start(tmp_path, kafka_bootstrap, ch_http, sink, group, **env)
    w.wait_until(lambda: w.status().get("batches", 0) >= 2, timeout_s=120, what="two batches")
    [(old_member, instance)] = group_members(kafka_bootstrap, group)
    assert instance == "worker-0"
    assert w.stop(signal.SIGKILL) == -signal.SIGKILL
    w = start(tmp_path, kafka_bootstrap, ch_http, sink, group, **env)
    try:
        w.wait_until(lambda: w.status().get("batches", 0) >= 1, timeout_s=50,
                     what="the restarted worker's first batch, well inside the dead member's 80 s session")
        members = group_members(kafka_bootstrap, group)
        assert len(members) == 1 and members[0][1] == "worker-0" and members[0][0] != old_member, members
    finally:
        assert w.stop() == 0


def test_worker_restarted_from_a_snapshot_after_a_kill_mid_write(kafka_bootstrap, ch_http, sink, tmp_path,
                                                                 workload, uninterrupted):
    """The worker snapshots every 200 events; a SIGKILL half-way through its third snapshot
    write leaves the second in use: the restarted worker loads it, replays only the log after
    it, and ends with the uninterrupted run's ledger, epoch roots and reward stream."""
    reset_topics(kafka_bootstrap, 3)
    produce_records(kafka_bootstrap, workload)
    group = "poa-test-" + uuid.uuid4().hex[:8]
    snaps = tmp_path / "snaps"
    env = dict(POA_WORKER_BATCH_MAX="50", POA_SNAPSHOT_EVERY_EVENTS="200", POA_SNAPSHOT_DIR=str(snaps),
               POA_WORKER_TOPOLOGY="single")  # a snapshot per 200 events needs batches of 50 events
    w = start(tmp_path, kafka_bootstrap, ch_http, sink, group, POA_FAILPOINTS="kill:snapshot@3", **env)
    deadline = time.monotonic() + 300
    while w.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert w.stop() == -signal.SIGKILL, w.log_tail()
    kept = sorted(snaps.glob("snap-*.poa"))
    assert len(kept) == 2 and len(list(snaps.glob(".snap-*.tmp-*"))) == 1
    second = int(kept[-1].stem.split("-")[1])
    assert events_done(sink) < uninterrupted[0].seq  # killed mid-run
    w = start(tmp_path, kafka_bootstrap, ch_http, sink, group, **env)
    try:
        w.wait_until(lambda: w.status().get("restored"), what="the start-up rebuild")
        restored = w.status()["restored"]
        wait_done(w, sink, uninterrupted[0].seq)
    finally:
        assert w.stop() == 0
    assert restored["snapshot_seq"] == second  # the second snapshot, then only the log after it
    assert restored["replayed_events"] < uninterrupted[0].seq - second
    check(sink, kafka_bootstrap, uninterrupted)
