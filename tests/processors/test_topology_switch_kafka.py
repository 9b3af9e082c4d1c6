"""Moving a store from the single topology to the scaled one, on the real broker.

A store the single topology wrote keeps its history; a scaled group started on it
(``POA_WORKER_TOPOLOGY=scaled``, the same ``POA_WORKER_ID``, so the same committed input
offsets) continues it: the core is rebuilt from the store's log, and from the switch on the
order is the merge's, a function of the input log after the group's committed offsets. The
reference is computed here without Kafka: the core restored from the store as the single
worker left it, then fed the offline merge of the input after those offsets."""
from __future__ import annotations

import time

import pytest
from support.worker import WorkerProcess
from test_scaled_kafka import expected_of, fresh_group, records, snapshot

from poa_stream.processors.core import Core, Result
from poa_stream.processors.merge import merged_order
from poa_stream.processors.replay import feed, restore
from poa_stream.processors.scaled import read_input_log
from poa_stream.streams.admin import group_progress
from poa_stream.streams.producer import produce_records

pytestmark = pytest.mark.kafka


def wait_stable(worker: WorkerProcess, count, at_least: int, timeout_s: float = 300) -> int:
    """Wait until ``count()`` reached ``at_least`` and then did not move for 3 s."""
    deadline, last, since = time.monotonic() + timeout_s, -1, time.monotonic()
    while True:
        assert worker.alive(), worker.log_tail()
        assert time.monotonic() < deadline, worker.log_tail()
        n = count()
        if n != last:
            last, since = n, time.monotonic()
        elif n >= at_least and time.monotonic() - since > 3:
            return n
        time.sleep(0.3)


def test_a_single_store_moves_to_the_scaled_topology(kafka_bootstrap, ch_http, chdb_path, settings, tmp_path):
    recs = records()
    half = len(recs) // 2
    sink, db, tag, env = fresh_group(kafka_bootstrap, ch_http, chdb_path, "switch")
    count = lambda: int(sink.scalar(f"SELECT count() FROM {db}.events") or 0)  # noqa: E731

    single = WorkerProcess(tmp_path / "single", **{**env, "POA_WORKER_TOPOLOGY": "single"}).start()
    try:
        produce_records(kafka_bootstrap, recs[:half])
        n_single = wait_stable(single, count, 1)
    finally:
        assert single.stop() == 0, single.log_tail()
    before = snapshot(sink)
    assert len(before["events"]) == n_single > 0

    # the reference: the store as the single worker left it, then the merge of what follows
    committed = {(p.topic, p.partition): p.position for p in group_progress(kafka_bootstrap, env["POA_WORKER_ID"])}
    assert all(p.committed == p.end for p in group_progress(kafka_bootstrap, env["POA_WORKER_ID"]))
    core = Core(settings)
    restore(core, sink)
    assert not core.buffer, "the single worker stopped with buffered events"

    scaled = WorkerProcess(tmp_path / "scaled", **env).start()
    try:
        produce_records(kafka_bootstrap, recs[half:])
        log = read_input_log(kafka_bootstrap)
        after = {src: [e for e in envs if e.offset >= committed[src]] for src, envs in log.items()}
        assert sum(map(len, after.values())) >= len(recs) - half
        res = Result()
        for held in merged_order(after):
            res.extend(feed(core, held))
        tail = expected_of(res)
        n_total = n_single + len(tail["events"])
        wait_stable(scaled, count, n_total)
        assert scaled.status().get("sequence_owner"), scaled.log_tail()
    finally:
        assert scaled.stop() == 0, scaled.log_tail()
    got = snapshot(sink)
    assert got["events"][:n_single] == before["events"]  # history kept as it was
    assert got["events"][n_single:] == tail["events"]    # then the merge's order
    assert sorted(set(got["ledger"]) - set(before["ledger"])) == tail["ledger"]
    assert {r[0]: r for r in got["roots"]}.items() >= {r[0]: r for r in tail["roots"]}.items()
