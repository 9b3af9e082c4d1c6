"""The Faust worker: one agent per input topic, all feeding the same processing core.

Each agent takes batches (``stream.take(n, within=...)``), and under one lock
(batches are processed and written strictly one after another, so ``seq`` order in
the store is processing order):

1. passes every raw message through :class:`processors.core.Core` (no Faust types),
   which buffers valid events and processes them in event-time order once the
   watermark over all input partitions, minus ``order_lateness_s`` of event time, has
   passed them (processors/order.py; when every partition is caught up, everything is
   released, so a worker that keeps up adds no latency). A
   partition with data that does not deliver (assigned to a dead member until its
   session times out, after a crash) holds the watermark: waiting keeps the order.
   Only after ``worker_idle_release_s`` without any message is everything released
   (a liveness valve; events arriving after that are processed late);
2. writes the rows to the sink in a worker thread, retrying the *same* batch inside
   the loop body until it lands: ``take()`` acknowledges the batch in a ``finally``
   after the body, so a write error must never escape it;
3. publishes rewards, flags and dead letters to their output topics.

Offsets therefore move only after the rows they produced are stored. If the worker
dies before the commit, the re-delivered messages are recognised by their keys in
the rebuilt core state and change nothing. On start the core is rebuilt from the
store's event log after orphans of an interrupted batch are removed.
Agents run at concurrency 1 (faust#606: concurrency > 1 can commit past an
in-flight message).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from datetime import datetime, timedelta, timezone

import faust
from faust.types import TP

from poa.settings import Settings
from processors.core import Core, Result
from processors.replay import restore
from sinks import open_sink
from sinks.base import Sink, SinkError
from streams import topics

log = logging.getLogger("poa.worker")


def kafka_client_options(s: Settings) -> dict:
    opts: dict = {"broker_credentials": None}
    if s.kafka_security_protocol != "PLAINTEXT" and s.kafka_sasl_mechanism:
        opts["broker_credentials"] = faust.SASLCredentials(
            username=s.kafka_sasl_username or "",
            password=s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else "",
            mechanism=s.kafka_sasl_mechanism)
    return opts


def pending_sources(s: Settings) -> set[tuple[str, int]]:
    """Input partitions holding messages this worker's group has not committed yet."""
    from streams.admin import group_progress
    return {(p.topic, p.partition) for p in group_progress(s.bootstrap, s.worker_id) if p.lag > 0}


class Pipeline:
    """Core + sink + output topics, shared by the agents of one worker."""

    def __init__(self, settings: Settings, sink: Sink):
        self.s = settings
        self.sink = sink
        self.core = Core(settings)
        self.lock = asyncio.Lock()
        self.out: dict[str, faust.TopicT] = {}
        self.batches = 0
        self.expected: set[tuple[str, int]] | None = None
        self.last_message_s = time.monotonic()
        self.in_flight = 0
        self.first_message_unix_s: float | None = None
        self.warmup_s = 0.0
        self.arrived_ms: dict[str, float] = {}  # event_id -> Kafka record time, until processed
        self.app: faust.App | None = None
        self.outbox = None  # streams.outbox.TransactionalOutbox, opened by recover_output()

    def restore(self) -> int:
        self.sink.ensure_schema()
        return restore(self.core, self.sink)

    async def recover_output(self) -> int:
        """Outbox recovery, before the first publish and after a failed one (call under
        ``lock``): (re)open the transactional producer, which fences a previous incarnation
        and aborts its open transaction, read back the highest committed ``poa-seq`` from
        the output topics, and publish the stored rows above it in one transaction
        (streams/outbox.py): each message exactly once."""
        from processors.messages import messages_from_rows
        from streams.outbox import TransactionalOutbox, published_mark
        await self._drop_outbox()
        tid = f"poa-out.{self.s.worker_id}.{self.s.worker_instance_id or 'dynamic'}"
        outbox = TransactionalOutbox(self.s.bootstrap, tid, **self.s.kafka_python_options())
        try:
            await outbox.start()
            mark = await asyncio.to_thread(published_mark, self.s.bootstrap, topics.OUTPUT_TOPICS,
                                           **self.s.kafka_python_options())
            rows = await asyncio.to_thread(self.sink.unpublished_rows, mark)
            n = await outbox.publish(messages_from_rows(rows), self.core.seq)
        except BaseException:
            await asyncio.wait_for(outbox.stop(), 10.0)
            raise
        self.outbox = outbox
        await self.write(Result(rows={"outbox": [{"seq": self.core.seq}]}))
        if n:
            log.warning("published %d stored output messages above the committed mark %d", n, mark)
        return n

    async def _drop_outbox(self) -> None:
        old, self.outbox = self.outbox, None
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), 10.0)
            except Exception:
                pass

    async def ensure_output(self) -> None:
        """At start (an app task) and before the first publish: recover the output once."""
        attempt = 0
        while self.outbox is None:
            try:
                await self.recover_output()
            except Exception as exc:
                attempt += 1
                log.warning("output recovery failed (attempt %d): %s", attempt, exc)
                await asyncio.sleep(min(30.0, 1.0 * attempt))

    async def write(self, res: Result) -> None:
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self.sink.write, res.rows)
                return
            except SinkError as exc:
                attempt += 1
                delay = min(30.0, exc.retry_after_s * attempt)
                log.warning("sink write failed (attempt %d), retrying in %.1fs: %s", attempt, delay, exc)
                await asyncio.sleep(delay)

    def _caught_up(self, message) -> bool:
        try:
            hw = self.app.consumer.highwater(message.tp)
        except Exception:  # no fetch position yet
            return False
        return hw is not None and message.offset + 1 >= hw

    async def handle(self, topic: str, events: list) -> None:
        if self.first_message_unix_s is None:
            self.first_message_unix_s = time.time()
        self.in_flight += 1
        self.last_message_s = time.monotonic()
        try:
            async with self.lock:
                await self._handle(topic, events)
        finally:
            self.in_flight -= 1
            self.last_message_s = time.monotonic()

    async def _handle(self, topic: str, events: list) -> None:
        t0 = time.monotonic()
        res = Result()
        last_offset: dict[int, int] = {}
        for e in events:
            msg = e.message
            raw = e.value if isinstance(e.value, bytes) else bytes(e.value or b"")
            before = len(self.core._inbox_new)
            try:
                res.extend(self.core.process(topic, raw, msg.partition, self._caught_up(msg)))
            except Exception as exc:  # a bug must not lose the message: dead-letter it
                log.exception("internal error on %s[%d]@%d", topic, msg.partition, msg.offset)
                res.extend(self.core.internal_error(topic, raw, exc))
            if len(self.core._inbox_new) > before and msg.timestamp:
                self.arrived_ms[self.core._inbox_new[-1]] = msg.timestamp * 1000.0
            last_offset[msg.partition] = msg.offset
        if self.expected is None:  # the partitions with data when consumption began
            try:
                self.expected = await asyncio.to_thread(pending_sources, self.s)
            except Exception as exc:  # admin API unavailable: fall back to what we see
                log.warning("cannot read the group's offsets (%s); ordering by what arrives", exc)
                self.expected = set()
        wm = self.core.marks.value(self.expected)
        if isinstance(wm, datetime):  # allow events this far out of order within a partition
            wm -= timedelta(seconds=self.s.order_lateness_s)
        if wm is not False:
            res.extend(self.core.release(wm))
        res.rows["pipeline_metrics"] = [self._metrics(topic, len(events), res, last_offset, t0)]
        await self._commit(res)

    def _metrics(self, topic: str, n: int, res: Result, last_offset: dict[int, int], t0: float) -> dict:
        """One row of pipeline health per batch (wall-clock time; not part of the ledger)."""
        now_ms = time.time() * 1000.0
        lat = sorted(now_ms - self.arrived_ms.pop(r["event_id"]) for r in res.rows.get("events", [])
                     if r["event_id"] in self.arrived_ms)
        lag = 0
        for p, off in last_offset.items():
            try:
                hw = self.app.consumer.highwater(TP(topic, p))
            except Exception:
                hw = None
            lag += max(0, (hw or 0) - off - 1)
        pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: 0.0)
        return {"ts": datetime.now(timezone.utc), "worker": self.s.worker_id, "topic": topic,
                "messages": n, "deadlettered": len(res.rows.get("deadletter", [])),
                "released": len(res.rows.get("events", [])), "buffered": len(self.core.buffer),
                "lag": lag, "batch_ms": (time.monotonic() - t0) * 1000.0,
                "e2l_p50_ms": pick(0.5), "e2l_p99_ms": pick(0.99), "e2l_max_ms": lat[-1] if lat else 0.0}

    def _idle(self) -> bool:
        return (bool(self.core.buffer) and self.in_flight == 0
                and time.monotonic() - self.last_message_s >= self.s.worker_idle_release_s)

    async def release_idle(self) -> None:
        """Release everything buffered once no batch is in flight and none has arrived for
        ``worker_idle_release_s`` (a source that stalls, or one that never delivers)."""
        if not self._idle():
            return
        async with self.lock:
            if self._idle():
                await self._commit(self.core.release(None))

    async def _commit(self, res: Result) -> None:
        res.rows["inbox"] = self.core.inbox_rows()
        await self.write(res)
        await self.publish(res.messages)
        if res.messages:  # the outbox mark: messages up to this seq are delivered
            await self.write(Result(rows={"outbox": [{"seq": self.core.seq}]}))
        self.batches += 1
        self.write_status()

    async def publish(self, messages: list[tuple[str, str, bytes]]) -> None:
        """Produce the batch's output messages in one Kafka transaction (before offsets move).
        The first time, and after a failure (broker down, timeout), recover instead: publish
        everything stored above the committed mark, this batch's rows included."""
        if not messages:
            return
        if self.outbox is None:
            await self.ensure_output()  # publishes this batch's stored rows too
            return
        try:
            await self.outbox.publish(messages, self.core.seq)
            return
        except Exception as exc:
            log.warning("publishing %d output messages failed: %s", len(messages), exc)
        await self._drop_outbox()
        await self.ensure_output()

    def write_status(self) -> None:
        """A small JSON status file (``POA_WORKER_STATUS_FILE``) for ops and the demo."""
        st = self.core.stats
        status = {"seq": self.core.seq, "buffered": len(self.core.buffer), "waiting": st.waiting,
                  "processed": st.processed, "deadlettered": st.deadlettered,
                  "redelivered": st.redelivered, "late": st.late, "batches": self.batches,
                  "first_message_unix_s": self.first_message_unix_s, "warmup_s": self.warmup_s,
                  "updated_unix_s": time.time()}
        path = self.s.status_file
        tmp = path.with_suffix(".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(status))
        tmp.replace(path)


def build_app(settings: Settings, sink: Sink | None = None) -> tuple[faust.App, Pipeline]:
    from attribution import warmup
    warm_s = warmup()
    log.info("numba kernels ready in %.1fs", warm_s)
    sink = sink or open_sink(settings)
    pipe = Pipeline(settings, sink)
    pipe.warmup_s = warm_s
    t0 = time.monotonic()
    n = pipe.restore()
    log.info("core rebuilt from %d logged events (+%d buffered) in %.1fs", n,
             len(pipe.core.buffer), time.monotonic() - t0)
    pipe.write_status()
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=4 << 20,
        consumer_max_fetch_size=8 << 20,
        broker_commit_every=settings.worker_batch_max,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.worker_session_timeout_s,
        consumer_group_instance_id=settings.worker_instance_id or None,
        **kafka_client_options(settings),
    )
    for name in topics.OUTPUT_TOPICS:
        pipe.out[name] = app.topic(name, value_serializer="raw", key_serializer="raw",
                                   partitions=topics.partitions_for(name, settings.topic_partitions))

    def make_agent(name: str):
        topic = app.topic(name, value_serializer="raw", key_serializer="raw",
                          partitions=topics.partitions_for(name, settings.topic_partitions))

        async def agent(stream):
            async for events in stream.take_events(settings.worker_batch_max,
                                                   within=settings.worker_batch_within_s):
                await pipe.handle(name, events)

        agent.__name__ = agent.__qualname__ = "consume_" + name.replace(".", "_")
        app.agent(topic, name=agent.__name__, concurrency=1)(agent)

    for name in topics.INPUT_TOPICS:
        make_agent(name)

    @app.timer(interval=0.5)
    async def idle_release() -> None:
        await pipe.release_idle()

    @app.task
    async def recover_output() -> None:  # stored rows a crash left unpublished go out at start
        async with pipe.lock:
            await pipe.ensure_output()

    pipe.app = app
    return app, pipe


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the worker until SIGTERM/SIGINT (the ``poa worker`` command)."""
    import signal

    from poa.kafka_local import ensure_topics

    def stop_during_startup(signum, frame):  # before faust installs its own handlers
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop_during_startup)
    ensure_topics(settings.bootstrap, settings.topic_partitions)
    app, _ = build_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
