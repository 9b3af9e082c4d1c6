"""The real worker writing to ClickHouse over HTTP through a link that cuts connections.

A TCP proxy (tests/support/faults.py FaultProxy) in front of the tests' ClickHouse HTTP
server cuts, deterministically from a seed, about one batch insert in five: before
forwarding it, after the server answered it (the rows landed, the answer is lost), or in
the middle of the answer, the modes taking turns. clickhouse-connect re-sends a cut insert
once by itself (same token); two cuts in a row reach the worker as a retryable sink error
and it retries the batch under the same key. After a scenario produced to Kafka is
processed: no table holds a row twice, the ledger equals `poa replay` of the same records
row for row, the epoch Merkle roots and the reward stream equal the replay path's, and a
restarted worker (same store, same flaky link) rebuilds its core from the store's log.

The scenario's records are produced in event-time order: the generator sends a few events
hours behind the others of their partition, more than ``order_lateness_s``, and the worker
processes such a late event where it arrives (processors/order.py), which depends on how
partitions interleave (timing), not on the link; the replay sorts it into place. In time
order no event is late, so the comparison is exact whatever the timing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime

import pytest
from support.faults import AFTER, BEFORE, MID, FaultProxy
from test_faults_kafka import check, expected_ledger, ledger, start, wait_done

from poa_stream.kafka_local import reset_topics
from poa_stream.scenario import generate
from poa_stream.processors.replay import process_all
from poa_stream.streams.producer import produce_records

pytestmark = pytest.mark.kafka
SEED, SCALE, CUT_RATE = 11, 0.3, 0.2
WORKER_ENV = dict(POA_WORKER_BATCH_MAX="50")
HELD_BACK = 150  # records produced only once the worker was restarted

# Natural keys: a row whose key appears twice was written twice.
NATURAL_KEYS = {
    "reward_ledger": "entry_id",
    "attributions": "(request_id, contribution_id, via_model)",
    "usage": "event_id",
    "validations": "event_id",
    "validator_scores": "(validator, event_id)",
    "validator_weights": "(epoch, validator)",
    "contributions": "(contribution_id, version)",
    "models": "(model_id, seq)",
    "flags": "(contribution_id, contributor, reason, event_id)",
    "deadletter": "event_id",
    "epochs": "epoch",
    "events": "seq",
    "inbox": "event_id",
}
PLAIN = ["reward_ledger", "attributions", "usage", "validations", "validator_scores",
         "validator_weights", "flags",
         "deadletter", "epochs", "events"]  # MergeTree: rows are never collapsed


def in_time_order(records: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """The records sorted by event time (stable; a record without a readable time keeps the
    place of the one before it)."""
    keyed, last = [], ""
    for i, (topic, line) in enumerate(records):
        try:
            ts = json.loads(line)["ts"]
            datetime.fromisoformat(ts.replace("Z", "+00:00"))
            last = ts
        except Exception:
            pass
        keyed.append((last, i, topic, line.encode()))
    return [(t, raw) for _, _, t, raw in sorted(keyed)]


@pytest.fixture(scope="module")
def workload():
    return in_time_order(generate(seed=SEED, scale=SCALE).records)


@pytest.fixture(scope="module")
def clean_replay(workload, tmp_path_factory):
    """The replay path in memory on the same records: (core, rows)."""
    from poa_stream.settings import Settings
    core, out = process_all(Settings(home=tmp_path_factory.mktemp("ref"), order_lateness_s=1e10), workload)
    return core, out.rows


@pytest.fixture(scope="module")
def poa_replay(workload, tmp_path_factory):
    """`poa replay` of the same records into a fresh embedded store: its ledger rows
    (entry_id, account, role, source, amount, epoch) and epoch roots."""
    d = tmp_path_factory.mktemp("poa-replay")
    (d / "records.jsonl").write_bytes(b"".join(raw + b"\n" for _, raw in workload))
    env = {**os.environ, "POA_HOME": str(d / "home")}

    def run(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "poa_stream.cli", *args], check=True, capture_output=True,
                              text=True, timeout=600, env=env).stdout
    run("replay", str(d / "records.jsonl"), "--store", str(d / "store"))
    ledger = run("sql", "--store", str(d / "store"), "SELECT entry_id, account, role, source, amount, epoch "
                 "FROM reward_ledger ORDER BY entry_id FORMAT JSONCompactEachRow "
                 "SETTINGS output_format_json_quote_64bit_integers = 0")
    roots = run("sql", "--store", str(d / "store"), "SELECT epoch, merkle_root FROM epochs ORDER BY epoch "
                "FORMAT JSONCompactEachRow")
    return [tuple(json.loads(line)) for line in ledger.splitlines()], [tuple(json.loads(r)) for r in roots.splitlines()]


def check_store(sink, bootstrap, clean_replay, poa_replay) -> None:
    core, rows = clean_replay
    db = sink.database
    dup = {t: sink.scalar(f"SELECT count() - uniqExact({k}) FROM {db}.{t}") for t, k in NATURAL_KEYS.items()}
    assert not any(dup.values()), f"rows written twice: {dup}"
    check(sink, bootstrap, clean_replay)  # ledger, events count, epoch roots, the reward stream
    _, got = sink.query(f"SELECT entry_id, account, role, source, amount, epoch FROM {db}.reward_ledger "
                        "ORDER BY entry_id")
    want_ledger, want_roots = poa_replay
    assert [tuple(r) for r in got] == want_ledger
    _, roots = sink.query(f"SELECT epoch, merkle_root FROM {db}.epochs ORDER BY epoch")
    assert [tuple(r) for r in roots] == want_roots
    for t in PLAIN:
        assert sink.scalar(f"SELECT count() FROM {db}.{t}") == len(rows.get(t, [])), t
    fees = sum(u["fee"] for u in rows["usage"])
    assert sink.scalar(f"SELECT sum(amount) FROM {db}.reward_ledger WHERE source = 'fee'") == fees


def test_worker_behind_a_link_that_cuts_inserts(kafka_bootstrap, ch_http, sink, tmp_path, workload,
                                                clean_replay, poa_replay):
    """Most of the records through a first worker, the rest through a restarted one (same
    store, same link): its core, rebuilt from the store's log, must carry on exactly."""
    from poa_stream.settings import Settings
    first, rest = workload[:-HELD_BACK], workload[-HELD_BACK:]
    ref_core, ref_first = process_all(Settings(home=tmp_path / "ref1", order_lateness_s=1e10), first)
    n1, n = ref_core.seq, clean_replay[0].seq
    reset_topics(kafka_bootstrap, 3)
    produce_records(kafka_bootstrap, first)
    group = "poa-test-" + uuid.uuid4().hex[:8]
    db = sink.database
    with FaultProxy(ch_http.port, rate=CUT_RATE, seed=SEED) as proxy:
        w = start(tmp_path, kafka_bootstrap, proxy, sink, group, **WORKER_ENV)  # `start` takes the port from it
        try:
            wait_done(w, sink, n1)
            status = w.status()
        finally:
            assert w.stop() == 0, w.log_tail()
        retried = w.log_tail(10**7).count("sink write failed")
        counts = dict(proxy.counts)
        print(f"first worker: {proxy.summary()}; {retried} failed writes retried by the worker; status {status}")
        assert all(counts[m] > 0 for m in (BEFORE, AFTER, MID)), proxy.summary()
        assert retried > 0, "no cut reached the worker's retry loop"
        assert status["late"] == 0, status  # in time order: the processing order is the replay's
        dup = {t: sink.scalar(f"SELECT count() - uniqExact({k}) FROM {db}.{t}") for t, k in NATURAL_KEYS.items()}
        assert not any(dup.values()), f"rows written twice: {dup}"
        assert sink.scalar(f"SELECT count() FROM {db}.events") == n1
        assert ledger(sink) == expected_ledger(ref_first.rows)

        # a restarted worker on the same store, behind the same link, rebuilds its core from
        # the log and processes the rest of the records
        w = start(tmp_path, kafka_bootstrap, proxy, sink, group, **WORKER_ENV)
        try:
            w.wait_until(lambda: w.status().get("seq") == n1, timeout_s=180,
                         what=f"the restarted worker's core rebuilt to seq {n1}")
            produce_records(kafka_bootstrap, rest)
            wait_done(w, sink, n)
            status = w.status()
        finally:
            assert w.stop() == 0, w.log_tail()
        print(f"both workers: {proxy.summary()}; status {status}")
        assert "diverged" not in w.log_tail(10**7) and "fatal" not in status and status["late"] == 0, w.log_tail()
        assert sink.scalar(f"SELECT max(generation) FROM {db}.writer_lease") == 2
        assert proxy.cut_total > sum(counts.values()), "the link cut nothing after the restart"
        assert not proxy.errors, proxy.errors
    check_store(sink, kafka_bootstrap, clean_replay, poa_replay)
