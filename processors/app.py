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
2. writes the rows to the sink in a worker thread, retrying the *same* batch (same batch
   key, so the same insert dedup tokens; sinks/base.py) inside the loop body until it
   lands: ``take()`` acknowledges the batch in a ``finally`` after the body, so no error may
   escape it. Store and network errors are retried with backoff; a fatal error (a bug, an
   impossible value, a lost writer lease) ends the process at once (:meth:`Pipeline.fatal`,
   exit code 70), before anything is acknowledged;
3. publishes rewards, flags and dead letters to their output topics.

Offsets therefore move only after the rows they produced are stored. If the worker
dies before the commit, the re-delivered messages are recognised by their keys in
the rebuilt core state and change nothing. On start the worker takes the store's
writer lease (sinks/lease.py; a second writer is refused), checks that its configured
ledger policy is the store's (sinks/policy_log.py), and rebuilds the core from the store's
event log after orphans of an interrupted batch are removed. A handler exception
quarantines its event (processors/core.py, the error boundary).
Agents run at concurrency 1 (faust#606: concurrency > 1 can commit past an
in-flight message).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time

from datetime import datetime, timedelta, timezone

import faust
from faust.types import TP

from poa_stream.settings import Settings
from poa_stream.processors import failpoints
from poa_stream.processors.core import Core, Result
from poa_stream.processors.merge import tick_of
from poa_stream.processors.metrics import WorkerMetrics
from poa_stream.processors.replay import restore
from poa_stream.processors.snapshots import Snapshots
from poa_stream.sinks import open_sink
from poa_stream.sinks.base import Sink, SinkError
from poa_stream.sinks.lease import Lease, StoreLocked
from poa_stream.sinks.policy_log import open_schedule
from poa_stream.streams.policy import PolicyMismatch

FATAL_EXIT_CODE = 70  # EX_SOFTWARE: the worker stopped itself to keep the ledger right
from poa_stream.streams import topics

log = logging.getLogger("poa.worker")


def pending_sources(s: Settings) -> set[tuple[str, int]]:
    """Input partitions holding messages this worker's group has not committed yet."""
    from poa_stream.streams.admin import group_progress
    return {(p.topic, p.partition) for p in group_progress(s.kafka(), s.worker_id) if p.lag > 0}


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
        self.sql_server = None  # sinks.ch_http.ChdbHttpServer: live read-only SQL (serve_sql)
        self.ops_server = None  # processors.metrics.OpsServer: /metrics, /health, /ready (serve_ops)
        self.metrics = WorkerMetrics()  # Prometheus counters, histograms and scrape-time gauges
        self.last_snapshot_unix: float | None = None
        self._published_seq = 0  # output published up to this seq (set by output recovery)
        self.loop_tick = time.monotonic()  # the event loop's last timer tick (liveness)
        self.on_fatal = os._exit  # how fatal() ends the process (tests may replace it)
        self.restored: dict = {}  # how the core was rebuilt at start (snapshot seq, tail, seconds)
        self.snapshots = (Snapshots.for_settings(settings) if settings.snapshot_every_events > 0
                          else None)  # processors/snapshots.py

    def restore(self) -> int:
        """Schema, the writer lease (refuses while another writer holds the store), then the
        core rebuilt from the store's log."""
        sink, warn = self.sink, log.warning
        sink.retrying(sink.ensure_schema, "creating the schema", log=warn)
        identity = (f"worker:{self.s.worker_id}/{self.s.worker_instance_id}@{socket.gethostname()}"
                    if self.s.worker_instance_id else None)  # static membership: a stable writer
        lease = Lease(sink, ttl_s=self.s.store_lease_ttl_s, identity=identity)
        sink.retrying(lease.acquire, "taking the writer lease", log=warn)  # same owner: idempotent
        try:
            def rebuild() -> int:
                self.core = Core(self.s, open_schedule(sink, self.s.policy()))
                return restore(self.core, sink, self.snapshots)
            return sink.retrying(rebuild, "rebuilding the core from the store", log=warn)
        except BaseException:
            lease.release()
            raise

    async def heartbeat(self) -> None:
        """Renew the writer lease (an app timer); a lost lease stops the worker."""
        lease = self.sink.lease
        if lease is None:
            return
        try:
            await asyncio.to_thread(lease.renew)
        except SinkError as exc:
            log.warning("writer lease renewal failed (store unreachable?): %s", exc)
        except Exception as exc:
            self.fatal(exc)

    async def recover_output(self) -> int:
        """Outbox recovery, before the first publish and after a failed one (call under
        ``lock``): (re)open the transactional producer, which fences a previous incarnation
        and aborts its open transaction, read back the committed mark (seq, pos) from the
        output topics, and publish the stored messages above it (up to ``core.seq``) in
        bounded windows and transactions, logging progress (processors/output_recovery.py,
        streams/outbox.py): each message exactly once. Raises ``Interrupted`` as soon as
        the app is stopping (or CancelledError when cancelled); the committed chunks stay
        committed and the next start continues from them."""
        from poa_stream.processors.output_recovery import publish_stored, until_stopped
        from poa_stream.streams.outbox import TransactionalOutbox, published_mark
        await self._drop_outbox()
        app = self.app
        stopping = (lambda: app.should_stop) if app is not None else None
        tid = self.outbox_transactional_id()
        conn = self.s.kafka()
        outbox = TransactionalOutbox(conn, tid, max_messages=self.s.outbox_max_messages)
        try:
            await until_stopped(outbox.start(), stopping)
            mark = await until_stopped(asyncio.to_thread(published_mark, conn, topics.OUTPUT_TOPICS,
                                                         timeout_s=60.0),
                                       stopping)
            rec = await publish_stored(self.sink, outbox, mark, upto_seq=self.core.seq, should_stop=stopping)
        except BaseException:
            try:
                await asyncio.wait_for(outbox.stop(), 10.0)
            except (Exception, asyncio.CancelledError):
                pass
            raise
        if mark[0] > self.core.seq:
            log.warning("the output topics' committed mark %s is above the store's last seq %d: were the "
                        "topics written from another store? (recovery takes the stored messages up to "
                        "the mark as published)", mark, self.core.seq)
        self.outbox = outbox
        self._published_seq = self.core.seq  # every stored output message is published
        await self.write(Result(rows={"outbox": [{"seq": self.core.seq}]}))
        if rec.messages:
            log.warning("published %d stored output messages above the committed mark %s in %d "
                        "transactions (%.1fs)", rec.messages, mark, rec.transactions, rec.seconds)
        return rec.messages

    def outbox_transactional_id(self) -> str:
        """One transactional id per writer: a restarted writer fences its previous incarnation."""
        return f"poa-out.{self.s.worker_id}.{self.s.worker_instance_id or 'dynamic'}"

    async def _drop_outbox(self) -> None:
        old, self.outbox = self.outbox, None
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), 10.0)
            except Exception:
                pass

    async def ensure_output(self) -> None:
        """At start (an app task) and before the first publish: recover the output once,
        retrying with a backoff. Returns without an outbox when the app is stopping (the
        stored rows go out on the next start)."""
        from poa_stream.streams.outbox import Interrupted
        app = self.app
        attempt = 0
        while self.outbox is None:
            if app is not None and app.should_stop:
                log.info("output recovery stopped: the worker is stopping (the next start continues it)")
                return
            try:
                await self.recover_output()
            except Interrupted:
                continue
            except Exception as exc:
                attempt += 1
                log.warning("output recovery failed (attempt %d): %s", attempt, exc)
                until = time.monotonic() + min(30.0, 1.0 * attempt)
                while time.monotonic() < until and not (app is not None and app.should_stop):
                    await asyncio.sleep(0.2)

    async def write(self, res: Result) -> None:
        """Write one batch until it lands: the same batch key on every attempt (so a retry
        re-sends the same dedup tokens), reading back what landed before each retry; store and
        network errors back off and retry, anything else stops the worker (:meth:`fatal`)."""
        key, attempt = self.sink.next_batch_key(), 0
        while True:
            try:
                await asyncio.to_thread(self.sink.write, res.rows, key, attempt > 0)
                return
            except SinkError as exc:
                attempt += 1
                self.metrics.store_retries.inc()
                delay = min(30.0, exc.retry_after_s * attempt)
                log.warning("sink write failed (attempt %d), retrying in %.1fs: %s", attempt, delay, exc)
                await asyncio.sleep(delay)
            except Exception as exc:  # FatalSinkError, LeaseLost, a bug: never acknowledge
                self.fatal(exc)

    async def snapshot(self) -> None:
        """Snapshot the core (every row it produced is stored) in a thread: the caller holds
        the lock, so nothing changes the core meanwhile, and the event loop (Kafka heartbeats,
        the lease) stays responsive. A failure is a warning: the previous snapshot, or the
        whole log, still restores the same state."""
        try:
            info = await asyncio.to_thread(self.snapshots.write, self.core)
            self.last_snapshot_unix = time.time()
            log.info("snapshot %s: %.1f MiB in %.2fs", info.path.name, info.nbytes / 2**20, info.seconds)
        except Exception as exc:
            log.warning("snapshot failed (the previous one stays in use): %s: %s", type(exc).__name__, exc)

    def fatal(self, exc: BaseException) -> None:
        """Stop the worker at once, before Faust acknowledges the batch in flight (its
        ``take()`` acks in a ``finally``, so no exception may leave the agent): one log line,
        the status file, then ``os._exit``. Offsets of unwritten messages stay uncommitted."""
        msg = f"{type(exc).__name__}: {exc}"
        log.critical("stopping: %s", msg)
        try:
            self.write_status(fatal=msg)
            if self.sink.lease is not None:  # this process writes nothing more: let a
                self.sink.lease.release()     # restarted worker take the store at once
        finally:
            for h in logging.getLogger().handlers + log.handlers:
                try:
                    h.flush()
                except Exception:
                    pass
            self.on_fatal(FATAL_EXIT_CODE)

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
        try:
            await self._process(topic, events)
        except (asyncio.CancelledError, SystemExit):
            raise
        except Exception as exc:  # a broken core: stop before the batch is acknowledged
            self.fatal(exc)

    async def _process(self, topic: str, events: list) -> None:
        t0 = time.monotonic()
        res = Result()
        last_offset: dict[int, int] = {}
        for e in events:
            msg = e.message
            if tick_of(msg.headers) is not None:  # a scaled deployment's idle marker: no event,
                # but it may be the partition's last record: caught up all the same (else the
                # partition would hold the watermark until the idle valve)
                self.core.marks.observe((topic, msg.partition), None, self._caught_up(msg), progress=False)
                last_offset[msg.partition] = msg.offset
                continue
            raw = e.value if isinstance(e.value, bytes) else bytes(e.value or b"")
            before = len(self.core._inbox_new)
            try:
                record_ts = (datetime.fromtimestamp(msg.timestamp, timezone.utc)
                             if msg.timestamp else None)  # bounds the event's time
                res.extend(self.core.process(topic, raw, msg.partition, self._caught_up(msg),
                                             record_ts=record_ts))
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
            wm -= timedelta(seconds=self.core.schedule.base.order_lateness_s)
        if wm is not False:
            res.extend(self.core.release(wm))
        res.rows["pipeline_metrics"] = [self._metrics(topic, len(events), res, last_offset, t0)]
        await self._commit(res)
        self.metrics.batch_seconds.observe(time.monotonic() - t0)

    def _metrics(self, topic: str, n: int, res: Result, last_offset: dict[int, int], t0: float) -> dict:
        """One row of pipeline health per batch (wall-clock time; not part of the ledger)."""
        now_ms = time.time() * 1000.0
        lat = sorted(now_ms - self.arrived_ms[r["event_id"]] for r in res.rows.get("events", [])
                     if r["event_id"] in self.arrived_ms)
        lag = 0
        for p, off in last_offset.items():
            try:
                hw = self.app.consumer.highwater(TP(topic, p))
            except Exception:
                hw = None
            lag += max(0, (hw or 0) - off - 1)
        self.metrics.messages.labels(topic).inc(n)
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
        ``worker_idle_release_s`` (a source that stalls, or one that never delivers). Runs
        every 0.5 s on the event loop: its tick is the liveness probe's heartbeat."""
        self.loop_tick = time.monotonic()
        if not self._idle():
            return
        async with self.lock:
            if self._idle():
                try:
                    res = self.core.release(None)
                except Exception as exc:
                    self.fatal(exc)
                await self._commit(res)

    async def _commit(self, res: Result) -> None:
        res.rows["inbox"] = self.core.inbox_rows()
        failpoints.corrupt(res.rows)  # tests only (processors/failpoints.py)
        await self.write(res)
        now_ms = time.time() * 1000.0  # written: counted, and each event's record-to-ledger time
        self.metrics.observe_rows(res.rows, [now_ms - self.arrived_ms.pop(r["event_id"])
                                             for r in res.rows.get("events", ()) if r["event_id"] in self.arrived_ms])
        if res.rows.get("events"):  # stored: a rebuild after a handler error reads them back
            self.core.written(max(r["seq"] for r in res.rows["events"]))
        if await self.publish(res.messages, res.rows) and res.messages:
            # the outbox mark: messages up to this seq are delivered
            await self.write(Result(rows={"outbox": [{"seq": self.core.seq}]}))
        if self.snapshots is not None and self.snapshots.due(self.core, self.s.snapshot_every_events):
            await self.snapshot()
        self.batches += 1
        self.write_status()

    async def publish(self, messages: list[tuple[str, str, bytes]], rows: dict[str, list[dict]] | None = None
                      ) -> bool:
        """Produce a batch's output messages (before offsets move), each headed with its
        (seq, pos), in transactions of at most ``outbox.max_messages``. With the batch's
        ``rows`` their messages are built in canonical order (processors/messages.py;
        ``messages`` must be the same ones); without, they are read back from the store
        (rows above the last published seq up to ``core.seq``, one query per output table;
        the batch is written first).
        The first time, and after a failure (broker down, timeout), recover instead: publish
        everything stored above the committed mark, this batch's rows included. Returns
        False if the worker is stopping and the messages were left for the next start's
        recovery (they are stored), True once they are committed."""
        if not messages:
            return True
        if self.outbox is None:
            await self.ensure_output()  # publishes this batch's stored rows too
            return self.outbox is not None
        from poa_stream.processors.messages import positioned_messages
        from poa_stream.processors.output_recovery import load_window
        items = await asyncio.to_thread(positioned_messages, rows) if rows is not None else None
        if items is not None and len(items) != len(messages):
            log.error("the batch's rows give %d output messages, the core %d: reading them from the store",
                      len(items), len(messages))
            items = None
        try:
            if items is None:  # the batch's rows: stored above the last published seq
                items = await asyncio.to_thread(load_window, self.sink, self._published_seq + 1, self.core.seq)
            await self.outbox.publish(items)
            self._published_seq = self.core.seq
            self.metrics.outbox_messages.inc(len(items))
            return True
        except Exception as exc:
            self.metrics.outbox_failures.inc()
            log.warning("publishing %d output messages failed: %s", len(messages), exc)
        await self._drop_outbox()
        await self.ensure_output()
        return self.outbox is not None

    def assigned_partitions(self) -> list[str]:
        """``topic/partition`` of every partition Kafka assigned this worker (none before start)."""
        try:
            return sorted(f"{tp.topic}/{tp.partition}" for tp in self.app.consumer.assignment())
        except Exception:  # the consumer is not started yet
            return []

    def readiness(self) -> tuple[bool, dict]:
        """Ready: the core is restored and Kafka assigned this worker its partitions."""
        assigned = self.assigned_partitions()
        return bool(self.restored) and bool(assigned), {"restored": self.restored, "assigned": assigned}

    def status_fields(self) -> dict:
        """What the status file holds (a topology adds its own fields)."""
        st = self.core.stats
        return {"seq": self.core.seq, "buffered": len(self.core.buffer), "waiting": st.waiting,
                "processed": st.processed, "deadlettered": st.deadlettered,
                "redelivered": st.redelivered, "late": st.late, "batches": self.batches,
                "first_message_unix_s": self.first_message_unix_s, "warmup_s": self.warmup_s,
                "restored": self.restored, "snapshot_seq": self.snapshots.last_seq if self.snapshots else 0,
                "ops_url": self.ops_server.url if self.ops_server is not None else None,
                "updated_unix_s": time.time()}

    def write_status(self, fatal: str | None = None) -> None:
        """A small JSON status file (``POA_WORKER_STATUS_FILE``) for ops and the demo."""
        status = self.status_fields()
        if fatal:
            status["fatal"] = fatal
        path = self.s.status_file
        tmp = path.with_suffix(".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(status))
        tmp.replace(path)


def build_app(settings: Settings, sink: Sink | None = None) -> tuple[faust.App, Pipeline]:
    from poa_stream.attribution import warmup
    warm_s = warmup()
    log.info("numba kernels ready in %.1fs", warm_s)
    sink = sink or open_sink(settings)
    pipe = Pipeline(settings, sink)
    pipe.warmup_s = warm_s
    t0 = time.monotonic()
    n = pipe.restore()
    pipe.restored = {"snapshot_seq": pipe.snapshots.last_seq if pipe.snapshots else 0,
                     "replayed_events": n, "seconds": round(time.monotonic() - t0, 3)}
    log.info("core rebuilt in %.1fs: snapshot at seq %d + %d logged events (+%d buffered)",
                pipe.restored["seconds"], pipe.restored["snapshot_seq"], n, len(pipe.core.buffer))
    pipe.write_status()
    conn = settings.kafka()
    app = faust_app(settings)
    for name in topics.OUTPUT_TOPICS:
        pipe.out[name] = app.topic(name, value_serializer="raw", key_serializer="raw",
                                   partitions=topics.partitions_for(name, settings.topic_partitions))

    input_agents(app, settings, "consume_", pipe.handle)
    connect_common(app, pipe, settings)

    @app.timer(interval=0.5)
    async def idle_release() -> None:
        await pipe.release_idle()

    @app.timer(interval=settings.inbox_prune_interval_s)
    async def prune_inbox() -> None:  # processed events leave the inbox (not only at start)
        async with pipe.lock:
            try:
                n = await asyncio.to_thread(pipe.sink.prune_inbox)
                if n:
                    log.info("pruned %d processed events from the inbox", n)
            except Exception as exc:  # housekeeping: retried at the next tick
                log.warning("inbox pruning failed: %s", exc)

    @app.task
    async def recover_output() -> None:  # stored rows a crash left unpublished go out at start
        async with pipe.lock:
            await pipe.ensure_output()

    pipe.app = app
    from poa_stream.streams.admin import group_progress
    pipe.metrics.attach(pipe, lag_source=lambda: group_progress(conn, settings.worker_id))
    pipe.sql_server = serve_sql(settings, probes(pipe))
    pipe.ops_server = serve_ops(settings, pipe)
    return app, pipe


def faust_app(settings: Settings) -> faust.App:
    """The Faust app of a worker: raw bytes in and out, offsets committed after each batch."""
    conn = settings.kafka()
    return faust.App(
        settings.worker_id,
        broker=conn.faust_broker(),
        broker_credentials=conn.faust_credentials(),
        datadir=str(settings.home.resolve() / "worker-data"),  # not the current directory
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=4 << 20,
        consumer_max_fetch_size=8 << 20,
        broker_commit_every=settings.worker_batch_max,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.worker_session_timeout_s,
        consumer_group_instance_id=settings.worker_instance_id or None,
        # partitions added to an input topic: the group rebalances at the consumers' next metadata
        # refresh, and the owner's producer can write their join markers (Kafka's default: 5 min)
        consumer_metadata_max_age_ms=int(settings.worker_metadata_max_age_s * 1000),
        producer_metadata_max_age_ms=int(settings.worker_metadata_max_age_s * 1000),
    )


def input_agents(app: faust.App, settings: Settings, prefix: str, handle) -> None:
    """One agent per input topic (concurrency 1: faust#606), batches of raw messages handed to
    ``await handle(topic name, events)``; the batch is acknowledged when that returns."""
    def make_agent(name: str):
        topic = app.topic(name, value_serializer="raw", key_serializer="raw",
                          partitions=topics.partitions_for(name, settings.topic_partitions))

        async def agent(stream):
            async for events in stream.take_events(settings.worker_batch_max,
                                                   within=settings.worker_batch_within_s):
                await handle(name, events)

        agent.__name__ = agent.__qualname__ = prefix + name.replace(".", "_")
        app.agent(topic, name=agent.__name__, concurrency=1)(agent)

    for name in topics.INPUT_TOPICS:
        make_agent(name)


def connect_common(app: faust.App, pipe: "Pipeline", settings: Settings) -> None:
    """What both topologies share: rebalance logging, a clean outbox stop, the lease heartbeat."""
    def _tps(tps) -> str:
        return ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in tps)) or "none"

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned=frozenset(), **_kw) -> None:
        log.info("assigned %d partitions: %s", len(assigned), _tps(assigned))

    @app.on_partitions_revoked.connect
    async def on_revoked(sender, revoked=frozenset(), **_kw) -> None:
        if revoked:
            log.info("revoked %d partitions: %s", len(revoked), _tps(revoked))

    @app.on_before_shutdown.connect
    async def close_output(sender, **_kw) -> None:
        """Stop the transactional producer cleanly (no "Unclosed AIOKafkaProducer" at exit)."""
        log.info("stopping: seq %d, %d events processed", pipe.core.seq, pipe.core.stats.processed)
        try:
            await asyncio.wait_for(pipe.lock.acquire(), 15.0)
        except asyncio.TimeoutError:
            log.warning("stopping while a batch is still being written; the next start finishes it")
            await pipe._drop_outbox()
            return
        try:
            await pipe._drop_outbox()
        finally:
            pipe.lock.release()

    @app.timer(interval=max(0.5, settings.store_lease_ttl_s / 4))
    async def lease_heartbeat() -> None:
        await pipe.heartbeat()


LIVENESS_STALL_S = 30.0


def probes(pipe: "Pipeline") -> dict:
    """``/health``: the event loop ticked in the last ``LIVENESS_STALL_S`` (a hung loop and an
    idle one no longer look the same); ``/ready``: the core is restored and Kafka assigned
    this worker its partitions (it consumes). Both report seq, processed and buffered."""
    def common() -> dict:
        st = pipe.core.stats
        return {"seq": pipe.core.seq, "processed": st.processed, "buffered": len(pipe.core.buffer)}

    def health():
        age = time.monotonic() - pipe.loop_tick
        return age < LIVENESS_STALL_S, {"loop_age_s": round(age, 3), **common()}

    def ready():
        ok, detail = pipe.readiness()
        return ok, {**detail, **common()}
    return {"/health": health, "/ready": ready}


def serve_sql(settings: Settings, probes: dict | None = None):
    """Serve the embedded store read-only over ClickHouse's HTTP interface (sinks/ch_http.py)
    and write the endpoint file the CLI looks for; None for a server store or when off."""
    if settings.store_engine != "chdb" or not settings.sql_http_enabled:
        return None
    import json as _json
    import os as _os

    from poa_stream.sinks.ch_http import ChdbHttpServer
    pw = settings.sql_http_password.get_secret_value() if settings.sql_http_password else None
    server = ChdbHttpServer(settings.store_path, settings.sql_http_host, settings.sql_http_port, readonly=True,
                            user=settings.sql_http_user, password=pw, probes=probes).start()
    endpoint = settings.sql_endpoint_file()
    tmp = endpoint.with_name(endpoint.name + ".tmp")
    tmp.write_text(_json.dumps({"url": server.url, "user": settings.sql_http_user, "password_required": bool(pw),
                                "database": settings.clickhouse_database, "pid": _os.getpid()}))
    tmp.replace(endpoint)
    log.info("read-only SQL on the store at %s (database %s; endpoint file %s)", server.url,
                settings.clickhouse_database, endpoint)
    return server


def serve_ops(settings: Settings, pipe: "Pipeline"):
    """/metrics, /health and /ready (processors/metrics.py) on POA_METRICS_HOST:PORT; None
    when off (port -1) or when the port is taken (a warning: the worker runs on)."""
    if settings.metrics_port < 0:
        return None
    from poa_stream.processors.metrics import OpsServer
    try:
        server = OpsServer(pipe.metrics, probes(pipe), settings.metrics_host, settings.metrics_port).start()
    except OSError as exc:
        log.warning("no metrics endpoint: %s:%d: %s (set POA_METRICS_PORT)", settings.metrics_host,
                    settings.metrics_port, exc)
        return None
    log.info("metrics and probes at %s/metrics, /health, /ready", server.url)
    return server


def stop_sql(settings: Settings, server) -> None:
    if server is None:
        return
    try:
        server.stop()
    finally:
        settings.sql_endpoint_file().unlink(missing_ok=True)


TOPOLOGIES = ("auto", "scaled", "single")


class TopologyRefused(RuntimeError):
    """The configured topology cannot run on this store without losing input."""


def resolve_topology(settings: Settings, sink: Sink) -> tuple[str, str]:
    """(the topology a worker runs, why): ``POA_WORKER_TOPOLOGY`` when it names one; for
    ``auto`` (the default), what the store holds. A store with merge state, or a new one,
    runs the scaled topology, whose ledger is a function of the input log alone (any number
    of workers; on the embedded store, one worker process). A store that logged events
    without merge state was written by the single topology: it keeps running single until an
    operator moves it with ``POA_WORKER_TOPOLOGY=scaled`` (same ``POA_WORKER_ID``): the
    scaled owner then rebuilds the core from the store, processes what the single worker had
    buffered (its ``inbox``) with the first message it releases, and from there the order is
    the merge's, a function of the input after the group's committed offsets (the history
    before stays as the single worker wrote it; ``poa audit`` recomputes from offset 0, so it
    covers stores the scaled topology wrote from the start). The way back is refused
    (:class:`TopologyRefused`): the scaled group's intake commits input offsets as soon as
    messages are forwarded to the sequence, so a single worker would skip the messages still
    held there. Creates the schema when missing (as the worker's start does anyway)."""
    chosen = settings.worker_topology
    if chosen == "scaled":
        return chosen, f"POA_WORKER_TOPOLOGY={chosen}"
    sink.retrying(sink.ensure_schema, "creating the schema", log=log.warning)
    frontier, held = sink.retrying(sink.load_merge, "reading the merge state", log=log.warning)
    if chosen == "single":
        if frontier or held:
            raise TopologyRefused(
                f"the store {sink.database!r} holds the scaled topology's merge state: its group's intake "
                "committed input offsets of messages the sequence may still hold, which a single worker "
                "would skip; run it with POA_WORKER_TOPOLOGY=auto (or scaled), or start the single "
                "topology on a new store")
        return chosen, f"POA_WORKER_TOPOLOGY={chosen}"
    if frontier or held:
        return "scaled", "auto: the store holds the scaled topology's merge state"
    last = sink.retrying(sink.last_seq, "reading the store's last seq", log=log.warning)
    if last > 0:
        return "single", (f"auto: the store logged {last} events without merge state, so the single "
                          "topology wrote it; set POA_WORKER_TOPOLOGY=single to say so, or "
                          "POA_WORKER_TOPOLOGY=scaled to move it to the deterministic merge from here on")
    return "scaled", "auto: a new store runs the deterministic merge"


def run_worker(settings: Settings, loglevel: str = "info", log_format: str = "text") -> None:
    """Run the worker until SIGTERM/SIGINT (the ``poa worker`` command)."""
    import faulthandler
    import signal

    from poa_stream.streams.admin import create_topics
    from poa_stream.streams.connection import KafkaConfigError

    from poa_stream.logs import configure
    try:
        log_config = configure(loglevel, log_format)
    except ValueError as exc:
        raise SystemExit(f"poa worker: {exc}") from None
    log.info("starting worker %s (pid %d), store %s (%s)", settings.worker_id, os.getpid(),
             settings.store_path if settings.store_engine == "chdb" else settings.clickhouse_url, settings.store_engine)
    faulthandler.enable(all_threads=True)  # a crash in native code (chdb) leaves the threads' stacks in the log
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # ops: `kill -USR2 <pid>` dumps every thread's stack

    def stop_during_startup(signum, frame):  # before faust installs its own handlers
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop_during_startup)
    try:
        conn = settings.kafka()
    except KafkaConfigError as exc:
        raise SystemExit(f"poa worker: {exc}") from None
    log.info("Kafka: %s", conn.describe())
    created = create_topics(conn, settings.topic_partitions, settings.topic_replication_factor)
    if created:
        log.info("created topics %s", ", ".join(created))
    if settings.worker_topology not in TOPOLOGIES:
        raise SystemExit(f"poa worker: POA_WORKER_TOPOLOGY must be one of {', '.join(TOPOLOGIES)}, "
                         f"not {settings.worker_topology!r}")
    try:
        sink = open_sink(settings)
        topology, why = resolve_topology(settings, sink)
        log.info("topology: %s (%s)", topology, why)
        settings = settings.model_copy(update={"worker_topology": topology})
        if topology == "scaled":
            from poa_stream.processors.scaled import build_scaled_app
            app, pipe = build_scaled_app(settings, sink)
        else:
            app, pipe = build_app(settings, sink)
    except (StoreLocked, PolicyMismatch, TopologyRefused) as exc:
        log.critical("%s", exc)
        raise SystemExit(f"poa worker: {exc}") from None
    import copy
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, logging_config=copy.deepcopy(log_config))
    try:
        worker.execute_from_commandline()
    finally:  # close the engine before the interpreter exits: chdb torn down by exit handlers can crash
        try:
            stop_sql(settings, pipe.sql_server)
            if pipe.ops_server is not None:
                pipe.ops_server.stop()
            pipe.sink.close()
        finally:
            if pipe.sink.lease is not None:
                pipe.sink.lease.release()
        log.info("stopped: store closed")
