"""The scaled topology on the real broker: 1, 2 and 3 workers in one consumer group, and 3
workers of which the sequence owner is SIGKILLed mid-run, all give the same event log,
ledger and epoch roots, equal to the offline merge of the same input log
(processors/replay.py ``replay_merged``)."""
from __future__ import annotations

import signal
import time
import uuid

import pytest
from support.worker import WorkerProcess

from poa_stream import scenario as sc
from poa_stream.kafka_local import reset_topics
from poa_stream.processors.replay import replay_merged
from poa_stream.processors.scaled import read_input_log
from poa_stream.sinks.chdb_sink import ChdbSink
from poa_stream.streams.producer import produce_records

pytestmark = pytest.mark.kafka


def snapshot(sink) -> dict:
    db = sink.database
    _, events = sink.query(f"SELECT seq, event_id, status FROM {db}.events ORDER BY seq")
    _, ledger = sink.query(f"SELECT entry_id, epoch, account, role, source, toString(amount), ref_event_id "
                           f"FROM {db}.reward_ledger ORDER BY entry_id")
    _, roots = sink.query(f"SELECT epoch, merkle_root, entries FROM {db}.epochs ORDER BY epoch")
    return {"events": [tuple(r) for r in events], "ledger": [tuple(r) for r in ledger],
            "roots": [tuple(r) for r in roots]}


def metrics_of(url: str) -> dict[str, float]:
    import urllib.request
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith(("poa_sequence_owner", "poa_merge_held", "poa_intake_forwarded",
                                "poa_intake_records"))}


def expected_of(res) -> dict:
    ev = [(r["seq"], r["event_id"], r["status"]) for r in res.rows["events"]]
    led = sorted((r["entry_id"], r["epoch"], r["account"], r["role"], r["source"], str(r["amount"]),
                  r["ref_event_id"]) for r in res.rows["reward_ledger"])
    roots = sorted((r["epoch"], r["merkle_root"], r["entries"]) for r in res.rows.get("epochs", []))
    return {"events": ev, "ledger": led, "roots": roots}


RECORDS = None


def records() -> list[tuple[str, bytes]]:
    """The seeded scenario (about 1,700 events, malformed ones and re-deliveries included)."""
    global RECORDS
    if RECORDS is None:
        RECORDS = [(t, raw.encode() if isinstance(raw, str) else raw)
                   for t, raw in sc.generate(seed=11, scale=0.5).records]
    return RECORDS


def fresh_group(bootstrap: str, ch_http, chdb_path, name: str) -> tuple:
    """Fresh input topics, a new database on the test HTTP store and the environment of a
    scaled worker in a new group: (sink, database, tag, env)."""
    reset_topics(bootstrap, 3)
    tag = uuid.uuid4().hex[:8]
    db = f"{name.replace('-', '_')}_{tag}"
    sink = ChdbSink(chdb_path, db)
    sink.ensure_schema()
    env = dict(POA_KAFKA_BOOTSTRAP=bootstrap, POA_STORE_ENGINE="http", POA_WORKER_TOPOLOGY="scaled",
               POA_CLICKHOUSE_URL=f"http://127.0.0.1:{ch_http.port}", POA_CLICKHOUSE_DATABASE=db,
               POA_WORKER_ID=f"poa-test-{name}-{tag}", POA_WORKER_SESSION_TIMEOUT_S="6",
               POA_STORE_LEASE_TTL_S="4")
    return sink, db, tag, env


def run_group(bootstrap: str, ch_http, chdb_path, tmp_path, settings, n_workers: int,
              kill_owner_at: float | None = None, sig: int = signal.SIGKILL,
              allowed_exit: set[int] = frozenset()) -> tuple[dict, dict, list[dict]]:
    """Fresh input topics, ``n_workers`` scaled workers in a new group, every one assigned
    partitions before the scenario is produced; returns (stored, offline reference of the
    produced input log, worker statuses)."""
    sink, db, tag, env = fresh_group(bootstrap, ch_http, chdb_path, f"scaled-{n_workers}")
    env.update(POA_MERGE_TICK_AFTER_S="4", POA_WORKER_BATCH_MAX="100",
               POA_SNAPSHOT_DIR=str(tmp_path / f"snap-{tag}"), POA_SNAPSHOT_EVERY_EVENTS="300")
    workers = [WorkerProcess(tmp_path / f"w{n_workers}-{i}-{tag}", POA_WORKER_INSTANCE_ID=f"w{i}", **env).start()
               for i in range(n_workers)]
    count = lambda: int(sink.scalar(f"SELECT count() FROM {db}.events") or 0)  # noqa: E731
    killed = None
    try:
        n_parts = 3 * 3 + 1 + 1  # three input topics of 3 partitions, models (1), the sequence (1)
        def ours(w) -> list[str]:  # Faust's own leader topic aside
            return [tp for tp in w.status().get("assigned", ()) if "__assignor" not in tp]
        workers[0].wait_until(lambda: all(ours(w) for w in workers) and
                              sum(len(ours(w)) for w in workers) == n_parts,
                              timeout_s=240, what=f"{n_workers} workers sharing {n_parts} partitions")
        produce_records(bootstrap, records())
        _, res = replay_merged(settings, read_input_log(bootstrap))
        want = expected_of(res)
        n_events = len(want["events"])
        if kill_owner_at is not None:
            deadline = time.monotonic() + 240
            while count() < kill_owner_at * n_events:
                assert time.monotonic() < deadline, [w.log_tail() for w in workers]
                assert all(w.alive() for w in workers), [w.log_tail() for w in workers]
                time.sleep(0.1)
            owner = next(w for w in workers if w.status().get("sequence_owner"))
            if sig == signal.SIGSTOP:  # a paused owner: the group and the lease move on without it
                owner.proc.send_signal(signal.SIGSTOP)
                others = [w for w in workers if w is not owner]
                others[0].wait_until(lambda: any(w.status().get("sequence_owner") for w in others),
                                     timeout_s=120, what="a new sequence owner")
                owner.proc.send_signal(signal.SIGCONT)  # it wakes up believing it owns the sequence
                deadline = time.monotonic() + 120
                while owner.alive() and owner.status().get("sequence_owner"):
                    assert time.monotonic() < deadline, owner.log_tail()
                    time.sleep(0.2)
                if not owner.alive() or "stopping: LeaseLost" in owner.log_path.read_text(errors="replace"):
                    owner.proc.wait(60)  # fenced: it stopped itself (status first, then exit 70)
                    assert owner.proc.returncode in allowed_exit, owner.log_tail()
                    killed = owner
            else:
                rc = owner.stop(sig)
                assert rc == (0 if sig == signal.SIGTERM else -signal.SIGKILL), owner.log_tail()
                killed = owner
            at_kill = count()
            assert at_kill < n_events, "the kill came after the end: nothing was left to move"
        live = [w for w in workers if w is not killed]
        live[0].wait_until(lambda: count() >= n_events and all(w.alive() for w in live), timeout_s=300,
                           what=f"{n_events} logged events")
        time.sleep(1.5)  # nothing more may come
        assert count() == n_events
        # the ops endpoint of the live workers: one owner, every input message forwarded once or more
        scraped = [metrics_of(w.status()["ops_url"]) for w in live]
        assert sum(m["poa_sequence_owner"] for m in scraped) == 1, scraped
        assert sum(m["poa_merge_held_messages"] for m in scraped) == 0
        if killed is None:
            forwarded = sum(m["poa_intake_forwarded_total"] for m in scraped)
            assert forwarded >= len(records())
            # several envelopes per sequence record: fewer records than messages
            assert sum(m["poa_intake_records_total"] for m in scraped) < forwarded
    finally:
        codes = [w.stop() for w in workers if w is not killed]
    assert all(c == 0 or c in allowed_exit for c in codes), [w.log_tail() for w in workers]
    statuses = [{**w.status(), "log": w.log_path.read_text(errors="replace"), "stopped_mid_run": w is killed}
                for w in workers]
    got = snapshot(sink)
    sink.close()
    return got, want, statuses


def test_same_ledger_whatever_the_number_of_workers_and_after_a_kill(kafka_bootstrap, ch_http, chdb_path,
                                                                     settings, tmp_path):
    one, want, st1 = run_group(kafka_bootstrap, ch_http, chdb_path, tmp_path, settings, 1)
    assert len(want["events"]) > 1000 and want["ledger"] and want["roots"]
    assert one == want
    two, want2, st2 = run_group(kafka_bootstrap, ch_http, chdb_path, tmp_path, settings, 2)
    assert two == want2 == want
    assert all(s.get("forwarded", 0) > 0 for s in st2), st2  # the intake was shared out
    three, want3, st3 = run_group(kafka_bootstrap, ch_http, chdb_path, tmp_path, settings, 3, kill_owner_at=0.3)
    assert three == want3 == want
    assert all(s.get("forwarded", 0) > 0 for s in st3), st3
    # the sequence moved: a survivor became its owner after the kill
    assert sum(s.get("activations", 0) for s in st3) >= 2, st3


def test_a_gracefully_stopped_owner_hands_the_sequence_over(kafka_bootstrap, ch_http, chdb_path, settings,
                                                            tmp_path):
    """SIGTERM to the sequence owner mid-run: it releases the lease and the producer, a
    survivor takes over without waiting out the lease, and the ledger is the offline one."""
    got, want, st = run_group(kafka_bootstrap, ch_http, chdb_path, tmp_path, settings, 2, kill_owner_at=0.3,
                              sig=signal.SIGTERM)
    assert got == want
    stopped = next(s for s in st if s["stopped_mid_run"])
    survivor = next(s for s in st if s is not stopped)
    assert "sequence released (stopping)" in stopped["log"] and not stopped["sequence_owner"]
    assert survivor["activations"] == 1 and "waiting for the store's writer lease" not in survivor["log"]


def test_a_paused_owner_that_lost_the_sequence_writes_nothing_more(kafka_bootstrap, ch_http, chdb_path,
                                                                   settings, tmp_path):
    """SIGSTOP the sequence owner mid-run until the group gave its partitions to the other
    worker and that one took the store's lease, then SIGCONT it: the stale owner must stop
    writing (revoked, or fenced by the newer lease generation: exit 70), and the store must
    hold exactly the offline event log and ledger (a stale write would add rows)."""
    got, want, st = run_group(kafka_bootstrap, ch_http, chdb_path, tmp_path, settings, 2, kill_owner_at=0.3,
                              sig=signal.SIGSTOP, allowed_exit={70})
    assert got == want
    stale = next(s for s in st if "sequence released" in s["log"] or "LeaseLost" in s["log"])
    assert not stale.get("sequence_owner")


def store_rows_via_cli(home, query: str) -> list[tuple[str, ...]]:
    """Rows of a query on the embedded store under ``home`` (`poa sql`, in a child process:
    this one runs its own chdb engine)."""
    import os
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "poa_stream.cli", "sql", "-q", query, "--format", "TabSeparated"],
                         env={**os.environ, "POA_HOME": str(home)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return [tuple(line.split("\t")) for line in out.stdout.splitlines()]


def test_one_worker_on_its_embedded_store_and_a_foreign_store_refused(kafka_bootstrap, settings, tmp_path):
    """The deterministic merge for a single worker on the embedded store: its ledger equals
    the offline merge of the input log. A second worker of the group on another (empty)
    embedded store, made the sequence owner by the first one's stop, refuses to start a
    second, partial ledger: it exits naming the mismatch, and writes nothing."""
    reset_topics(kafka_bootstrap, 3)
    tag = uuid.uuid4().hex[:8]
    env = dict(POA_KAFKA_BOOTSTRAP=kafka_bootstrap, POA_WORKER_TOPOLOGY="scaled",
               POA_WORKER_ID=f"poa-test-embedded-{tag}", POA_WORKER_SESSION_TIMEOUT_S="6",
               POA_STORE_LEASE_TTL_S="4", POA_MERGE_TICK_AFTER_S="2", POA_WORKER_BATCH_MAX="100")

    def ours(w) -> list[str]:
        return [tp for tp in w.status().get("assigned", ()) if "__assignor" not in tp]
    a = WorkerProcess(tmp_path / f"a-{tag}", POA_WORKER_INSTANCE_ID="a", **env).start()
    b = None
    try:
        a.wait_until(lambda: len(ours(a)) == 11, timeout_s=240, what="the worker assigned its 11 partitions")
        produce_records(kafka_bootstrap, records())
        _, res = replay_merged(settings, read_input_log(kafka_bootstrap))
        want = expected_of(res)
        a.wait_until(lambda: a.status().get("seq", 0) >= len(want["events"]), timeout_s=300,
                     what=f"{len(want['events'])} logged events")
        b = WorkerProcess(tmp_path / f"b-{tag}", POA_WORKER_INSTANCE_ID="b", **env).start()
        b.wait_until(lambda: bool(ours(b)), timeout_s=240, what="the second worker in the group")
        assert a.stop(signal.SIGTERM) == 0, a.log_tail()
        extra = [(t, raw.encode() if isinstance(raw, str) else raw)
                 for t, raw in sc.generate(seed=12, scale=0.05).records[:30]]
        produce_records(kafka_bootstrap, extra)  # the sequence has to move on: b must own it
        deadline = time.monotonic() + 240
        while b.alive():
            assert time.monotonic() < deadline, b.log_tail()
            time.sleep(0.5)
        assert b.proc.returncode != 0 and "holds none of the sequence" in b.log_path.read_text(errors="replace"), \
            b.log_tail()
    finally:
        for w in (a, b):
            if w is not None and w.alive():
                w.stop()
    got = {"events": [(int(s), e, st) for s, e, st in
                      store_rows_via_cli(a.home, "SELECT seq, event_id, status FROM events ORDER BY seq")],
           "ledger": [(e, int(ep), acc, role, src, amt, ref) for e, ep, acc, role, src, amt, ref in store_rows_via_cli(
               a.home, "SELECT entry_id, epoch, account, role, source, toString(amount), ref_event_id "
                       "FROM reward_ledger ORDER BY entry_id")],
           "roots": [(int(ep), r, int(n)) for ep, r, n in store_rows_via_cli(
               a.home, "SELECT epoch, merkle_root, entries FROM epochs ORDER BY epoch")]}
    assert got == want
    assert store_rows_via_cli(b.home, "SELECT count() FROM events") == [("0",)]


def test_a_new_owner_takes_over_without_new_input(kafka_bootstrap, ch_http, chdb_path, settings, tmp_path):
    """The owner consumed every sequence record and holds the tail (its ticks are an hour
    away), then stops. No new input comes: its successor must take the sequence over on
    assignment, tick the idle partitions and release the tail; the ledger is the offline
    merge of the input log (ticks included)."""
    sink, db, tag, env = fresh_group(kafka_bootstrap, ch_http, chdb_path, "takeover")
    count = lambda: int(sink.scalar(f"SELECT count() FROM {db}.events") or 0)  # noqa: E731
    a = WorkerProcess(tmp_path / f"a-{tag}", POA_WORKER_INSTANCE_ID="a", POA_MERGE_TICK_AFTER_S="3600", **env).start()
    b = None
    try:
        a.wait_until(lambda: len([t for t in a.status().get("assigned", ()) if "__assignor" not in t]) == 11,
                     timeout_s=240, what="the first worker assigned its 11 partitions")
        produce_records(kafka_bootstrap, records())
        a.wait_until(lambda: a.status().get("held", 0) > 0 and a.status().get("forwarded", 0) >= len(records())
                     and a.status().get("seq", 0) > 0 and not a.status().get("in_flight"), timeout_s=300,
                     what="everything forwarded and the tail held")
        time.sleep(3)  # the last sequence records consumed and committed
        held_at_stop = a.status()["held"]
        assert a.stop(signal.SIGTERM) == 0, a.log_tail()
        before = count()
        b = WorkerProcess(tmp_path / f"b-{tag}", POA_WORKER_INSTANCE_ID="b", POA_MERGE_TICK_AFTER_S="1", **env).start()
        b.wait_until(lambda: b.status().get("sequence_owner") and b.status().get("held", 1) == 0
                     and b.status().get("ticks_sent", 0) > 0, timeout_s=240,
                     what="the successor owning the sequence, its ticks sent and nothing held")
        time.sleep(2)
    finally:
        for w in (a, b):
            if w is not None and w.alive():
                assert w.stop() == 0, w.log_tail()
    _, res = replay_merged(settings, read_input_log(kafka_bootstrap))
    want = expected_of(res)
    assert held_at_stop > 0 and before < len(want["events"]) == count()
    assert snapshot(sink) == want
    sink.close()


def grow_usage_then_produce(bootstrap: str, recs, half: int) -> None:
    """poa.usage grows from 3 to 4 partitions; on the new one, a usage earlier in event time
    than anything of the first half (id ``early-on-the-new-partition``); then the second half
    (keyed: some of it lands on the new partition too)."""
    import json

    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewPartitions
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_partitions({"poa.usage": NewPartitions(total_count=4)})
    finally:
        admin.close()
    early = json.loads(next(raw for t, raw in recs[:half] if t == "poa.usage" and b'"type":"usage"' in raw))
    early.update(event_id="early-on-the-new-partition", request_id="early-on-the-new-partition")
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        producer.send("poa.usage", value=json.dumps(early).encode(), key=b"early", partition=3).get(timeout=60)
    finally:
        producer.close()
    produce_records(bootstrap, recs[half:])


def joined_then_stopped(w: WorkerProcess, sink, count, settings, bootstrap: str, timeout_s: float):
    """Wait until the new partition joined and nothing is held, then until every event of the
    offline merge of the input log is logged; stop the worker (exit 0). Returns (its last
    status, the store, the offline reference)."""
    try:
        w.wait_until(lambda: w.status().get("joined", 0) >= 1 and w.status().get("held", 1) == 0
                     and not w.status().get("joining") and w.status().get("seq", 0) > 0,
                     timeout_s=timeout_s, what="the new partition joined and nothing held")
        _, res = replay_merged(settings, read_input_log(bootstrap))
        want = expected_of(res)
        w.wait_until(lambda: count() >= len(want["events"]), timeout_s=300, what="every event logged")
        time.sleep(1.5)
        st = w.status()
    finally:
        assert w.stop() == 0, w.log_tail()
    got = snapshot(sink)
    sink.close()
    return st, got, want


def test_a_partition_added_mid_run_joins_through_its_marker(kafka_bootstrap, ch_http, chdb_path, settings,
                                                           tmp_path):
    """poa.usage grows from 3 to 4 partitions while the group runs (the worker restarted
    to pick it up). The new partition's records, one of them earlier in event time than
    everything already released, wait for the owner's join marker and then sort after
    what was released: the store equals the offline merge of the input log, marker
    included. Without the join rule the restarted owner took the new partition as a member
    from the start and released that early record out of the log's order."""
    sink, db, tag, env = fresh_group(kafka_bootstrap, ch_http, chdb_path, "join")
    env.update(POA_MERGE_TICK_AFTER_S="2", POA_WORKER_BATCH_MAX="100")
    count = lambda: int(sink.scalar(f"SELECT count() FROM {db}.events") or 0)  # noqa: E731
    recs = records()
    half = len(recs) // 2
    produce_records(kafka_bootstrap, recs[:half])
    _, first = replay_merged(settings, read_input_log(kafka_bootstrap))
    w = WorkerProcess(tmp_path / f"a-{tag}", POA_WORKER_INSTANCE_ID="w0", **env).start()
    try:
        w.wait_until(lambda: count() >= len(first.rows["events"]) and w.status().get("held", 1) == 0,
                     timeout_s=300, what="the first half logged")
    finally:
        assert w.stop() == 0, w.log_tail()
    grow_usage_then_produce(kafka_bootstrap, recs, half)
    # another instance id: a static member rejoining as w0 would get its cached assignment back
    # without a rebalance (KIP-345), and the new partition only at the next metadata refresh
    w2 = WorkerProcess(tmp_path / f"b-{tag}", POA_WORKER_INSTANCE_ID="w1", **env).start()
    st, got, want = joined_then_stopped(w2, sink, count, settings, kafka_bootstrap, timeout_s=300)
    assert st["joins_sent"] >= 1 and "poa.usage/3" in w2.log_path.read_text(errors="replace")
    assert any(e == "early-on-the-new-partition" for _, e, _ in got["events"])
    early_seq = next(s for s, e, _ in got["events"] if e == "early-on-the-new-partition")
    assert early_seq > len(first.rows["events"])  # after everything the first run released
    assert got == want


def test_a_partition_added_while_the_worker_runs_joins_without_a_restart(kafka_bootstrap, ch_http, chdb_path,
                                                                         settings, tmp_path):
    """poa.usage grows from 3 to 4 partitions under a running worker, with no member joining
    or leaving: the consumers' metadata refresh (POA_WORKER_METADATA_MAX_AGE_S) rebalances the
    group onto the new partition, the owner's producer learns it and writes its join marker,
    and the store equals the offline merge of the input log, marker included. Kafka's
    default refresh (5 minutes) would leave the new partition unread past the timeout."""
    sink, db, tag, env = fresh_group(kafka_bootstrap, ch_http, chdb_path, "live-join")
    env.update(POA_MERGE_TICK_AFTER_S="2", POA_WORKER_BATCH_MAX="100", POA_WORKER_METADATA_MAX_AGE_S="3")
    count = lambda: int(sink.scalar(f"SELECT count() FROM {db}.events") or 0)  # noqa: E731
    recs = records()
    half = len(recs) // 2
    w = WorkerProcess(tmp_path / f"a-{tag}", POA_WORKER_INSTANCE_ID="w0", **env).start()
    try:
        w.wait_until(lambda: w.status().get("sequence_owner"), timeout_s=240, what="the sequence owner")
        produce_records(kafka_bootstrap, recs[:half])
        _, first = replay_merged(settings, read_input_log(kafka_bootstrap))
        w.wait_until(lambda: count() >= len(first.rows["events"]) and w.status().get("held", 1) == 0,
                     timeout_s=300, what="the first half logged")
        grow_usage_then_produce(kafka_bootstrap, recs, half)
    except BaseException:
        w.stop()
        raise
    st, got, want = joined_then_stopped(w, sink, count, settings, kafka_bootstrap, timeout_s=120)
    assert st["joins_sent"] >= 1, st  # the rebalance moved the sequence back to this same process
    early_seq = next(s for s, e, _ in got["events"] if e == "early-on-the-new-partition")
    assert early_seq > len(first.rows["events"])
    assert got == want
