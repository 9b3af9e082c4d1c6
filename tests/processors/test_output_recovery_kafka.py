"""Output recovery against the real broker (processors/output_recovery.py, streams/outbox.py):
a large stored backlog goes out exactly once, in bounded transactions and bounded memory,
a recovery stops promptly when cancelled and the next one finishes the rest, and the real
worker exits promptly on SIGTERM during its start-up recovery.

The in-process tests publish to topics of their own (``poa-rt-<hex>.*``: the builders read
``streams.topics.REWARDS`` etc. at call time), so they need no topic reset; the worker
test uses the real topic names and resets them like tests/processors/test_app_kafka.py.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from poa_stream.processors.messages import positioned_messages
from poa_stream.processors.output_recovery import DEFAULT_WINDOW_ROWS, load_window, publish_stored
from poa_stream.streams import topics
from poa_stream.streams.outbox import NO_MARK, TransactionalOutbox, parse_mark, published_mark

pytestmark = pytest.mark.kafka

TS = datetime(2026, 1, 1, tzinfo=timezone.utc)


# ---------------------------------------------------------------- helpers
def fill(sink, n_rewards: int, per_seq: int = 4, flag_every: int = 0, dead_every: int = 0,
         batch: int = 250_000, first_seq: int = 1) -> int:
    """Insert synthetic output rows in a few large column batches: ``n_rewards`` ledger rows,
    ``per_seq`` per seq; a flag on every ``flag_every``-th seq and a dead letter on every
    ``dead_every``-th (0: none). Returns the last seq."""
    tok = "token" in inspect.signature(sink.insert).parameters
    run = uuid.uuid4().hex[:8]

    def insert(table, cols, part):
        if tok:
            sink.insert(table, cols, token=f"fill-{run}-{table}-{part}")
        else:
            sink.insert(table, cols)

    for part, lo in enumerate(range(0, n_rewards, batch)):
        idx = range(lo, min(n_rewards, lo + batch))
        seqs = [first_seq + i // per_seq for i in idx]
        insert("reward_ledger", {
            "entry_id": [f"e{i:08d}" for i in idx], "epoch": [i // 100_000 for i in idx],
            "account": [f"acct{i % 997}" for i in idx], "role": ["contributor"] * len(idx),
            "source": ["fee"] * len(idx), "amount": [1 + i % 1000 for i in idx],
            "ref_event_id": [f"u{s}" for s in seqs], "ts": [TS] * len(idx), "seq": seqs}, part)
    last = first_seq + (n_rewards - 1) // per_seq
    if flag_every:
        fs = list(range(first_seq, last + 1, flag_every))
        insert("flags", {"contribution_id": [f"c{s}" for s in fs], "contributor": ["bob"] * len(fs),
                         "reason": ["near_duplicate"] * len(fs), "score": [0.5 + (s % 7) / 16 for s in fs],
                         "detail": [f"like c{s - 1}" for s in fs], "ts": [TS] * len(fs),
                         "event_id": [f"u{s}" for s in fs], "seq": fs}, 0)
    if dead_every:
        ds = list(range(first_seq, last + 1, dead_every))
        insert("deadletter", {"event_id": [f"d{s}" for s in ds], "topic": ["poa.usage"] * len(ds),
                              "reason": ["bad fee"] * len(ds), "payload": ["{\"x\": \"" + "y" * (s % 300) + "\"}"
                                                                          for s in ds],
                              "ts": [TS] * len(ds), "seq": ds}, 0)
    return last


@pytest.fixture
def out_topics(kafka_bootstrap, monkeypatch):
    """Output topics of this test alone (3 partitions each), deleted afterwards."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    prefix = "poa-rt-" + uuid.uuid4().hex[:8]
    names = {"REWARDS": prefix + ".rewards", "FLAGS": prefix + ".flags", "DEADLETTER": prefix + ".deadletter"}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(n, 3, 1) for n in names.values()])
    deadline = time.monotonic() + 30
    while not set(names.values()) <= set(admin.list_topics()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for attr, name in names.items():
        monkeypatch.setattr(topics, attr, name)
    out = (names["REWARDS"], names["FLAGS"], names["DEADLETTER"])
    monkeypatch.setattr(topics, "OUTPUT_TOPICS", out)
    yield out
    try:
        admin.delete_topics(list(out))
    finally:
        admin.close()


def read_committed(bootstrap: str, names, partitions: int = 3, marks: bool = True
                   ) -> list[tuple[str, bytes, tuple[int, int] | None]]:
    """Every committed record of ``names`` (``partitions`` each): (topic, value, (seq, pos))
    (the mark None unless ``marks``). aiokafka: about 6x faster than kafka-python here."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             isolation_level="read_committed", max_partition_fetch_bytes=8 << 20,
                             fetch_max_bytes=64 << 20)
        await c.start()
        try:
            parts = [TopicPartition(t, p) for t in names for p in range(partitions)]
            c.assign(parts)
            await c.seek_to_beginning(*parts)
            end = await c.end_offsets(parts)  # read_committed: the last stable offsets
            out, deadline = [], time.monotonic() + 300
            while any([await c.position(tp) < end[tp] for tp in parts]):
                assert time.monotonic() < deadline, "reading back took too long"
                for tp, recs in (await c.getmany(timeout_ms=500, max_records=100_000)).items():
                    out += [(tp.topic, r.value, parse_mark(r.headers) if marks else None) for r in recs]
            return out
        finally:
            await c.stop()
    return asyncio.run(run())


def entry_id(value: bytes) -> bytes:
    i = value.index(b'"entry_id":"') + 12
    return value[i:value.index(b'"', i)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The peak growth of this process's resident memory while in the block (sampled every
    20 ms), from a baseline taken after returning freed heap memory to the OS."""

    def __enter__(self):
        import ctypes
        import threading
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, rss_bytes())
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.growth = self.peak - self.base


def expected_messages(sink, last_seq: int):
    return load_window(sink, 1, last_seq)


def tid() -> str:
    return "poa-out.test." + uuid.uuid4().hex[:8]


# ---------------------------------------------------------------- tests
def test_fresh_and_stored_rows_give_the_same_positioned_messages(sink, settings):
    """The canonical (seq, pos) order of the real core's rows equals the one rebuilt from the
    same rows read back from the store (in the store's own order)."""
    from poa_stream.processors.replay import process_all
    from support.events_factory import scenario
    _, res = process_all(settings, scenario())
    fresh = positioned_messages(res.rows)
    assert len(fresh) == len(res.messages) and {m for *_, m in fresh} == set(res.messages)
    sink.write({t: res.rows.get(t, []) for t in ("reward_ledger", "flags", "deadletter")})
    last = max(s for s, _, _ in fresh)
    assert load_window(sink, 1, last) == fresh
    # from a mark inside a seq: only the messages above it
    mid = fresh[len(fresh) // 2]
    assert load_window(sink, mid[0], last, above=mid[:2]) == fresh[len(fresh) // 2 + 1:]


def test_pipeline_heads_every_message_with_its_position_on_every_path(sink, tmp_path, kafka_bootstrap, out_topics):
    """Pipeline.recover_output (stored rows), Pipeline.publish with the batch's rows and
    Pipeline.publish without them (read back from the store) give each message the same
    (seq, pos) as the canonical order of all rows, and publish each once."""
    from poa_stream.settings import Settings
    from poa_stream.processors.app import Pipeline
    from poa_stream.processors.replay import process_all
    from support.events_factory import scenario
    settings = Settings(home=tmp_path / "home", kafka_bootstrap=kafka_bootstrap,
                        worker_id="poa-test-" + uuid.uuid4().hex[:8])
    _, res = process_all(settings, scenario())
    rows = {t: res.rows.get(t, []) for t in ("reward_ledger", "flags", "deadletter")}
    want = positioned_messages(rows)
    seqs = sorted({s for s, _, _ in want})
    s1, s2, last = seqs[len(seqs) // 3], seqs[2 * len(seqs) // 3], seqs[-1]

    def part(lo, hi):
        return {t: [r for r in rs if lo < r["seq"] <= hi] for t, rs in rows.items()}

    pipe = Pipeline(settings, sink)

    async def run():
        try:
            sink.write(part(0, s1))
            pipe.core.seq = s1
            assert await pipe.recover_output() == len(positioned_messages(part(0, s1)))
            batch = part(s1, s2)
            sink.write(batch)
            pipe.core.seq = s2
            assert await pipe.publish([m for *_, m in positioned_messages(batch)], batch) is True
            batch = part(s2, last)
            sink.write(batch)
            pipe.core.seq = last
            assert await pipe.publish([m for *_, m in positioned_messages(batch)]) is True
        finally:
            await pipe._drop_outbox()
    asyncio.run(run())
    got = read_committed(kafka_bootstrap, out_topics)
    assert sorted((mark, (topic, value)) for topic, value, mark in got) == \
        sorted(((s, p), (m[0], m[2])) for s, p, m in want)
    assert published_mark(kafka_bootstrap, out_topics) == want[-1][:2]


def test_million_row_backlog_goes_out_once_in_bounded_chunks_and_memory(sink, kafka_bootstrap, out_topics,
                                                                        caplog):
    n = int(os.environ.get("POA_TEST_RECOVERY_ROWS", 1_000_000))
    last_seq = fill(sink, n, per_seq=4)
    # what holding the backlog at once takes (rows and messages, as the old recovery did):
    # the traced peak of loading a 20,000-row sample, scaled up
    tracemalloc.start()
    sample = len(load_window(sink, 1, 5_000))
    at_once = tracemalloc.get_traced_memory()[1] / sample * n
    tracemalloc.stop()

    caplog.set_level(logging.INFO, logger="poa.worker.output")

    async def run():
        outbox = await TransactionalOutbox(kafka_bootstrap, tid(), max_messages=20_000).start()
        try:
            mark = published_mark(kafka_bootstrap, out_topics)
            assert mark == NO_MARK
            with PeakRss() as mem:
                rec = await publish_stored(sink, outbox, mark)
            again = await publish_stored(sink, outbox, published_mark(kafka_bootstrap, out_topics))
            return rec, mem, again, outbox.transactions
        finally:
            await outbox.stop()

    rec, mem, again, transactions = asyncio.run(run())
    print(f"\nrecovery: {rec.messages} messages in {rec.transactions} transactions, {rec.seconds:.1f}s "
          f"({rec.messages / rec.seconds:.0f} messages/s); peak RSS growth {mem.growth / 2**20:.0f} MiB; "
          f"holding the backlog at once: {at_once / 2**20:.0f} MiB")
    assert rec.backlog == rec.messages == n
    assert rec.transactions == transactions == -(-n // 20_000)  # chunks of 20,000, each its own transaction
    assert rec.mark == (last_seq, (n - 1) % 4)
    assert again.messages == 0 and again.backlog == 0
    # about three windows in practice (the one published, the one read, transients): far
    # below the backlog at once (1,074 MiB for 1M rows; measured growth about 150 MiB)
    window = at_once / n * DEFAULT_WINDOW_ROWS
    assert mem.growth < 6 * window, (mem.growth, window)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("output recovery: ")]
    assert len(progress) >= 3 and f"{n}/{n} messages" in progress[-1], progress

    got = read_committed(kafka_bootstrap, out_topics, marks=False)
    assert len(got) == n
    assert {entry_id(v) for _, v, _ in got} == {b"e%08d" % i for i in range(n)}
    assert published_mark(kafka_bootstrap, out_topics) == (last_seq, (n - 1) % 4)


def test_cancelled_recovery_stops_promptly_and_the_next_one_finishes(sink, kafka_bootstrap, out_topics):
    """Rewards, flags and dead letters mixed within seqs; chunks of 3,001 messages end inside
    seqs, so the second recovery resumes from a (seq, pos) mark."""
    last_seq = fill(sink, 150_000, per_seq=3, flag_every=4, dead_every=50)
    want = expected_messages(sink, last_seq)
    t = tid()

    async def run():
        first = await TransactionalOutbox(kafka_bootstrap, t, max_messages=3_001).start()
        task = asyncio.create_task(publish_stored(sink, first, NO_MARK, window_rows=10_000))
        deadline = time.monotonic() + 120
        txn = first.producer._txn_manager
        while first.transactions < 3 or not txn.is_in_transaction():  # inside the 4th (or a later) chunk
            assert not task.done() and time.monotonic() < deadline
            await asyncio.sleep(0.002)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stopped_s = time.monotonic() - t0
        await first.stop()
        committed = first.transactions
        t0 = time.monotonic()
        mark = published_mark(kafka_bootstrap, out_topics)  # reads through the aborted chunk
        assert time.monotonic() - t0 < 5.0
        assert mark == first.mark
        second = await TransactionalOutbox(kafka_bootstrap, t, max_messages=3_001).start()
        try:
            rec = await publish_stored(sink, second, mark)
        finally:
            await second.stop()
        return stopped_s, committed, mark, rec

    stopped_s, committed, mark, rec = asyncio.run(run())
    print(f"\ncancelled after {committed} transactions, stopped in {stopped_s:.2f}s; resumed from {mark}")
    assert stopped_s < 3.0, stopped_s
    assert 3 <= committed < len(want) // 3_001
    done = committed * 3_001
    assert mark == want[done - 1][:2]
    assert rec.backlog == rec.messages == len(want) - done
    got = read_committed(kafka_bootstrap, out_topics)
    assert len(got) == len(want)  # no duplicates, nothing missing
    assert sorted((m, (topic, value)) for topic, value, m in got) == \
        sorted(((s, p), (m[0], m[2])) for s, p, m in want)


def test_worker_exits_promptly_on_sigterm_during_recovery_and_the_restart_finishes(kafka_bootstrap, tmp_path):
    """The real worker, a store holding 300,000 unpublished ledger rows, and a batch of input
    waiting in an agent for the recovery's lock (Faust's shutdown waits for that batch:
    the recovery must give way for it). SIGTERM during the recovery: the worker exits in
    seconds; the restarted one publishes the rest, the batch's dead letters included, once."""
    from poa_stream.kafka_local import reset_topics
    from poa_stream.streams.producer import produce_records
    from support.worker import WorkerProcess
    n, n_bad = 300_000, 5
    store = tmp_path / "store"
    # fill the store in a child process (chdb: one store per process; this one may hold another);
    # the events log: one invalid event per seq, so the worker's start-up replay is quick
    script = (f"import sys; sys.path[:0] = [{str(Path(__file__).parent)!r}]\n"
              "import importlib.util\n"
              f"spec = importlib.util.spec_from_file_location('rt', {__file__!r})\n"
              "rt = importlib.util.module_from_spec(spec); spec.loader.exec_module(rt)\n"
              "from poa_stream.sinks.chdb_sink import ChdbSink\n"
              f"s = ChdbSink({str(store)!r}, 'poa'); s.ensure_schema()\n"
              f"last = rt.fill(s, {n}, per_seq=3)\n"
              "s.insert('events', {'seq': list(range(1, last + 1)), 'event_id': [f'x{i}' for i in range(1, last + 1)],"
              " 'type': ['invalid'] * last, 'topic': ['poa.usage'] * last, 'ts': [rt.TS] * last,"
              " 'status': ['deadletter'] * last, 'payload': ['{}'] * last}, token='fill-events')\n"
              "s.close()\n")
    tests_dir = str(Path(__file__).parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests_dir, os.getcwd()]))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    reset_topics(kafka_bootstrap, 3)
    produce_records(kafka_bootstrap, [(topics.USAGE, b"not an event %d" % i) for i in range(n_bad)])

    wenv = dict(POA_KAFKA_BOOTSTRAP=kafka_bootstrap, POA_STORE_DIR=str(store),
                POA_WORKER_ID="poa-test-" + uuid.uuid4().hex[:8])
    w = WorkerProcess(tmp_path / "w", **wenv).start()
    try:
        w.wait_until(lambda: f"/{n} messages" in w.log_tail(100_000), timeout_s=180,
                     what="a recovery progress line")
        time.sleep(0.5)
        t0 = time.monotonic()
        rc = w.stop(signal.SIGTERM, timeout_s=60)
        exit_s = time.monotonic() - t0
    finally:
        w.stop(signal.SIGKILL)
    log1 = w.log_path.read_text(errors="replace")
    assert rc == 0, log1[-4000:]
    assert exit_s < 10, (exit_s, log1[-4000:])
    assert "output recovery stopped: the worker is stopping" in log1
    # the agent's batch was processed (stored) during the shutdown, its messages left for the restart
    assert w.status().get("processed") == n // 3 + n_bad, w.status()
    first_mark = published_mark(kafka_bootstrap, topics.OUTPUT_TOPICS)
    assert NO_MARK < first_mark < (n // 3, 2), first_mark

    w2 = WorkerProcess(tmp_path / "w", **wenv).start()
    try:
        w2.wait_until(lambda: "output recovery done" in w2.log_path.read_text(errors="replace")[len(log1):],
                      timeout_s=180, what="the recovery to finish")
    finally:
        assert w2.stop() == 0
    log2 = w2.log_path.read_text(errors="replace")[len(log1):]
    progress = [line for line in (log1 + log2).splitlines() if "output recovery: " in line and " messages, seq " in line]
    print(f"\nworker: SIGTERM to exit {exit_s:.1f}s; first run committed up to {first_mark}; "
          f"{len(progress)} progress lines")
    assert len(progress) >= 3
    got = read_committed(kafka_bootstrap, topics.OUTPUT_TOPICS, marks=False)
    rewards = [v for t, v, _ in got if t == topics.REWARDS]
    assert len(rewards) == n
    assert {entry_id(v) for v in rewards} == {b"e%08d" % i for i in range(n)}
    assert len([v for t, v, _ in got if t == topics.DEADLETTER]) == n_bad
