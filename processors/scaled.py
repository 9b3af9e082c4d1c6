"""The scaled topology: any number of workers in one consumer group, one deterministic ledger.

Stages (each a Faust agent at concurrency 1; DESIGN.md "Scaled topology"):

1. **intake**, over the input topics (their partitions spread over every worker of the
   group): decodes and validates each message (pydantic, in parallel across workers) and
   forwards it as an :class:`~processors.merge.Envelope` (contract v2: its source position,
   record time and what decoding found, then the raw bytes) to the internal topic
   ``<group>.sequence``, many envelopes per record (:func:`processors.merge.pack`, up to
   1 MiB); a batch's offsets move only after the broker acknowledged every forward. Tick
   records (``poa-tick`` header) are forwarded as ticks.
2. **sequence**, over ``<group>.sequence`` (one partition, so one owner at a time): merges
   the sources deterministically (processors/merge.py), feeds the released messages to the
   same :class:`~processors.core.Core` as the single worker and the replay, and writes rows,
   the merge log and the output messages like the single worker does (processors/app.py
   :class:`Pipeline`). The order that decides the ledger is a function of the input log
   only: the same log gives the same ``events`` log, ledger and epoch roots with 1, 2 or
   N workers, across rebalances and crashes.

Ownership and fencing: the sequence owner restores when the partition is assigned (the
store's writer lease, waiting while a live holder has it; the core from snapshot + log;
the merge from ``merge_log``; output recovery under the transactional id shared by the
group, which fences the previous owner's producer) and, when the partition is revoked,
stops writing (lease released, outbox closed) before the next owner starts. The sink
refuses every write while no lease is held (``require_lease``), and a writer whose lease a
newer generation took is stopped at its next write (sinks/lease.py). A stale intake
worker's forwards are dropped by position (processors/merge.py).

Latency: a message is released once every input partition's frontier has passed it, so an
idle partition holds the rest back until the owner, after ``merge_tick_after_s`` without a
release, appends a tick to it (one message per lagging partition): the bound is the slowest
partition's progress plus ``merge_tick_after_s`` plus one round trip through intake.

Input partitions added while the group runs (a topic grown with ``kafka-topics --alter``)
join deterministically: the owner appends a join marker to each (processors/merge.py); until
it comes back through intake nothing is released (one trip through intake of latency).
"""
from __future__ import annotations

import asyncio
import logging
import time
import faust
from faust.types import TP

from poa_stream.processors.app import (Pipeline, connect_common, faust_app, input_agents, probes,
                                       serve_ops, serve_sql)
from poa_stream.processors.core import Core, Result
from poa_stream.processors.merge import JOIN_HEADER, TICK_HEADER, Envelope, Merge, join_of, pack, tick_of
from poa_stream.processors.replay import feed
from poa_stream.settings import Settings
from poa_stream.sinks import open_sink
from poa_stream.sinks.base import Sink
from poa_stream.sinks.lease import StoreLocked
from poa_stream.streams import topics
from poa_stream.streams.events import EventError, decode_event

log = logging.getLogger("poa.worker")


def envelope(topic: str, partition: int, offset: int, value, timestamp_s: float | None,
             headers) -> Envelope:
    """The intake stage's work on one input record (pure: a function of the record)."""
    tick = tick_of(headers)
    raw = value if isinstance(value, bytes) else bytes(value or b"")
    rts = int(round(timestamp_s * 1000)) if timestamp_s else None
    if tick is not None:
        return Envelope(topic, partition, offset, b"", rts, tick=tick, join=join_of(headers))
    try:
        ev = decode_event(raw)
    except EventError:
        return Envelope(topic, partition, offset, raw, rts)  # the sequence dead-letters it
    return Envelope(topic, partition, offset, raw, rts, ev.type, ev.event_id, ev.ts)


JOIN_RESEND_S = 10.0  # a join marker not back through intake after this long is sent again


class Sequencer(Pipeline):
    """The sequence stage of one worker: idle until it owns ``<group>.sequence``."""

    def __init__(self, settings: Settings, sink: Sink):
        super().__init__(settings, sink)
        sink.require_lease = True
        self.seq_topic = topics.sequence_topic(settings.worker_id)
        self.active = False
        self.merge = Merge()
        self.forwarded = 0  # intake: messages this worker forwarded
        self.forward_records = 0  # intake: sequence records they travelled in (pack())
        self._status_forwarded = 0
        self._seq_out = None  # the sequence topic, as intake sends to it
        self.ticks_sent = 0
        self.joins_sent = 0
        self._join_sent: dict[tuple[str, int], float] = {}  # source -> when its last join marker went
        self.last_release_s = time.monotonic()
        self.activations = 0
        self.released_seq = 0  # the core's seq when this worker last released the sequence
        self.assigned: list[str] = []  # this worker's partitions since the last rebalance

    def outbox_transactional_id(self) -> str:
        """Shared by the group: whoever owns the sequence next fences the previous owner."""
        return f"poa-out.{self.s.worker_id}.sequence"

    def fatal(self, exc: BaseException) -> None:
        """Stopping itself (a lost lease, a broken store): no longer the owner, say so first."""
        self.active = False
        super().fatal(exc)

    def owns_sequence(self) -> bool:
        try:
            return TP(self.seq_topic, 0) in self.app.consumer.assignment()
        except Exception:
            return False

    # ------------------------------------------------------------------ ownership
    async def activate(self, first_offset: int = 0) -> None:
        """Become the sequence owner (under ``lock``): lease, core, merge, output recovery.

        ``first_offset``: the sequence offset of the batch that activates. A store with no
        merge state must start at offset 0: a later one means the group already processed
        the sequence into another store (another database, or another worker's embedded
        store), and this one would start a second, partial ledger: refused."""
        from poa_stream.streams.admin import input_sources
        t0 = time.monotonic()
        app = self.app

        def take_store() -> int:
            waited = 0.0
            while True:
                try:
                    return self.restore()
                except StoreLocked as exc:
                    if app is not None and app.should_stop:
                        raise
                    if waited == 0.0:
                        log.info("waiting for the store's writer lease: %s", exc)
                    time.sleep(1.0)
                    waited += 1.0
        n = await asyncio.to_thread(take_store)
        frontier, held = await asyncio.to_thread(self.sink.load_merge)
        if not frontier and not held and first_offset > 0:
            raise RuntimeError(
                f"this store holds none of the sequence {self.seq_topic}, which the group has "
                f"processed up to offset {first_offset} into another store: every worker of a "
                "scaled group must write one store (POA_STORE_ENGINE=http; an embedded store "
                "serves one worker process); to start a new ledger, use a new POA_WORKER_ID")
        self.merge = Merge()
        if frontier or held:  # the members are the sources the store knows; a newer partition joins
            self.merge.restore(frontier, held)
        else:  # the sequence begins: every input partition now is a member
            self.merge.begin(await asyncio.to_thread(input_sources, self.s.kafka()))
        self.active = True
        self.activations += 1
        self.last_release_s = time.monotonic()
        self.restored = {"snapshot_seq": self.snapshots.last_seq if self.snapshots else 0,
                         "replayed_events": n, "seconds": round(time.monotonic() - t0, 3),
                         "held": len(self.merge.heap)}
        log.info("sequence owner (generation %d): core at seq %d (%d log rows replayed), %d sources, "
                 "%d held messages, in %.1fs", self.sink.generation, self.core.seq, n, len(self.merge.sources),
                 len(self.merge.heap), time.monotonic() - t0)
        await self.ensure_output()

    async def deactivate(self, why: str) -> None:
        """Stop writing (under ``lock``): close the outbox, release the lease, drop the state."""
        if not self.active:
            return
        self.active = False
        await self._drop_outbox()
        lease = self.sink.lease
        if lease is not None:
            await asyncio.to_thread(lease.release)
        seq, stats = self.core.seq, self.core.stats
        self.core = Core(self.s)
        self.core.stats = stats  # the status keeps what this worker did while it owned the sequence
        self.released_seq = seq
        self.merge = Merge()
        log.info("sequence released (%s) at seq %d: this worker writes nothing more", why, seq)
        self.write_status()

    # ------------------------------------------------------------------ stages
    async def forward(self, topic: str, events: list) -> None:
        """Intake: forward a batch to the sequence; returns once the broker has them all."""
        if self._seq_out is None:
            self._seq_out = self.app.topic(self.seq_topic, value_serializer="raw", key_serializer="raw")
        seq_topic, futures = self._seq_out, []
        envs = [envelope(topic, e.message.partition, e.message.offset, e.value, e.message.timestamp,
                         e.message.headers) for e in events]
        for record in pack(envs):  # many envelopes per sequence record
            futures.append(await seq_topic.send(key=f"intake/{topic}".encode(), value=record, partition=0))
        for f in futures:
            await f
        self.forwarded += len(events)
        self.forward_records += len(futures)

    async def sequence(self, events: list) -> None:
        if self.first_message_unix_s is None:
            self.first_message_unix_s = time.time()
        self.in_flight += 1
        try:
            async with self.lock:
                if not self.owns_sequence():
                    log.warning("a sequence batch arrived after the partition was revoked: not processed")
                    return
                if not self.active:
                    await self._take_over(events[0].message.offset if events else 0)
                await self._handle(self.seq_topic, events)
        finally:
            self.in_flight -= 1

    async def _process(self, topic: str, events: list) -> None:
        t0 = time.monotonic()
        res, core, merge = Result(), self.core, self.merge
        last_offset: dict[int, int] = {}
        for e in events:
            last_offset[e.message.partition] = e.message.offset
            try:
                envs = Envelope.decode_all(e.value if isinstance(e.value, bytes) else bytes(e.value))
            except (ValueError, KeyError, TypeError) as exc:  # not written by intake: nothing to order
                log.error("dropping a malformed sequence record at %s@%d: %s", topic, e.message.offset, exc)
                continue
            for env in envs:
                merge.accept(env)
        released = 0
        for held in merge.ready():
            before = len(core._inbox_new)
            try:
                res.extend(feed(core, held))
            except Exception as exc:  # a bug must not lose the message: dead-letter it
                log.exception("internal error on %s[%d]@%d", held.topic, held.partition, held.offset)
                res.extend(core.internal_error(held.topic, held.raw, exc))
            if len(core._inbox_new) > before and held.record_ts_ms:
                self.arrived_ms[core._inbox_new[-1]] = float(held.record_ts_ms)
            merge.done(held, core.seq)
            released += 1
        if released or not merge.heap:
            self.last_release_s = time.monotonic()
        res.rows["merge_log"] = merge.take_rows()
        res.rows["pipeline_metrics"] = [self._metrics(topic, len(events), res, last_offset, t0)]
        await self._commit(res)
        self.metrics.batch_seconds.observe(time.monotonic() - t0)

    async def tick_idle(self) -> None:
        if self.forwarded != self._status_forwarded:  # intake-only workers report their progress too
            self._status_forwarded = self.forwarded
            self.write_status()
        await self.activate_if_owner()
        await self._tick_idle()

    async def activate_if_owner(self) -> None:
        """Take the sequence over once it is assigned, without waiting for a record: the
        previous owner may have consumed every record (their messages held in ``merge_log``)
        and no new input may come to wake this one. Then release what the restored merge
        allows; held messages that wait for a frontier get ticks (:meth:`_tick_idle`)."""
        if self.active or self.in_flight or not self.owns_sequence():
            return
        from poa_stream.streams.admin import group_progress
        async with self.lock:
            if self.active or not self.owns_sequence():
                return
            try:
                part = await asyncio.to_thread(group_progress, self.s.kafka(), self.s.worker_id,
                                               (self.seq_topic,))
            except Exception as exc:  # the broker will answer at the next timer tick
                log.warning("cannot read the sequence's committed offset yet: %s", exc)
                return
            await self._take_over((part[0].committed or 0) if part else 0)
            await self._handle(self.seq_topic, [])

    async def _take_over(self, first_offset: int) -> None:
        """:meth:`activate` (under ``lock``), or stop the worker (``fatal``: a policy mismatch,
        a broken or foreign store, stopping while the lease was held elsewhere) before Faust
        acknowledges anything."""
        try:
            await self.activate(first_offset)
        except (asyncio.CancelledError, SystemExit):
            raise
        except Exception as exc:
            self.fatal(exc)

    async def _send_joins(self) -> None:
        """Append a join marker to every input partition that delivered before it joined the
        merge (the topic grew): a tick at :meth:`Merge.join_time` with the ``poa-join``
        header. Nothing is released until it comes back through intake; one still waiting
        after ``JOIN_RESEND_S`` gets another (only the partition's first marker counts)."""
        if not self.active or not self.merge.pending:
            return
        now = time.monotonic()
        due = [s for s in sorted(self.merge.pending) if now - self._join_sent.get(s, float("-inf")) >= JOIN_RESEND_S]
        if not due:
            return
        async with self.lock:
            if not self.active:
                return
            t = self.merge.join_time()
            headers = [(TICK_HEADER, t.isoformat().encode()), (JOIN_HEADER, b"1")]
            futures = [await self.app.topic(src, value_serializer="raw", key_serializer="raw").send(
                key=None, value=b"", partition=p, headers=headers) for src, p in due]
            for f in futures:
                await f
            for s in due:
                self._join_sent[s] = now
            self.joins_sent += len(due)
            log.info("input partitions %s delivered after the merge began: appended their join markers at %s",
                     ", ".join(f"{src}/{p}" for src, p in due), t.isoformat())

    async def _tick_idle(self) -> None:
        """Append a tick to every input partition holding the watermark back once nothing was
        released for ``merge_tick_after_s`` while messages are held (an app timer)."""
        await self._send_joins()
        if (not self.active or self.in_flight or not self.merge.heap or self.merge.pending
                or time.monotonic() - self.last_release_s < self.s.merge_tick_after_s):
            return
        async with self.lock:
            t, lagging = self.merge.lagging()
            if not self.active or t is None or not lagging:
                return
            headers = [(TICK_HEADER, t.isoformat().encode())]
            futures = [await self.app.topic(src, value_serializer="raw", key_serializer="raw").send(
                key=None, value=b"", partition=p, headers=headers) for src, p in lagging]
            for f in futures:
                await f
            self.ticks_sent += len(lagging)
            self.last_release_s = time.monotonic()
            log.info("nothing released for %.1fs: ticked %d input partitions to %s",
                     self.s.merge_tick_after_s, len(lagging), t.isoformat())

    def readiness(self) -> tuple[bool, dict]:
        """Ready: Kafka assigned this worker partitions (intake or sequence) and, if it owns
        the sequence, the core is restored."""
        assigned = self.assigned_partitions()
        owner = self.seq_topic + "/0" in assigned
        return bool(assigned) and (self.active or not owner), {
            "assigned": assigned, "sequence_owner": self.active, "restored": self.restored}

    def status_fields(self) -> dict:
        base = super().status_fields()
        if not self.active:  # the seq it reached while it owned the sequence (0: never)
            base["seq"] = self.released_seq
        return {**base, "topology": "scaled", "sequence_owner": self.active,
                "activations": self.activations, "held": len(self.merge.heap), "forwarded": self.forwarded,
                "forward_records": self.forward_records,
                "ticks_sent": self.ticks_sent, "joins_sent": self.joins_sent,
                "joining": sorted(f"{t}/{p}" for t, p in self.merge.pending), "joined": self.merge.joined, "merge_dropped": self.merge.dropped, "assigned": self.assigned}


def build_scaled_app(settings: Settings, sink: Sink | None = None) -> tuple[faust.App, Sequencer]:
    from poa_stream.attribution import warmup
    from poa_stream.streams.admin import create_topics, group_progress
    warm_s = warmup()
    log.info("numba kernels ready in %.1fs", warm_s)
    if settings.store_engine == "chdb":  # the deterministic merge for one worker process
        log.info("scaled topology on the embedded store: this worker process alone can own the "
                 "sequence (a second one on the same store cannot open it; on another store "
                 "it is refused when it would take the sequence over)")
    conn = settings.kafka()
    seq_name = topics.sequence_topic(settings.worker_id)
    if create_topics(conn, settings.topic_partitions, settings.topic_replication_factor, (seq_name,)):
        log.info("created the sequence topic %s (1 partition)", seq_name)
    pipe = Sequencer(settings, sink or open_sink(settings))
    pipe.warmup_s = warm_s
    pipe.write_status()
    app = faust_app(settings)
    pipe.app = app

    input_agents(app, settings, "intake_", pipe.forward)
    seq_topic = app.topic(seq_name, value_serializer="raw", key_serializer="raw", partitions=1)

    @app.agent(seq_topic, name="sequence", concurrency=1)
    async def sequence(stream):
        async for events in stream.take_events(settings.worker_batch_max, within=settings.worker_batch_within_s):
            await pipe.sequence(events)

    connect_common(app, pipe, settings)

    @app.on_partitions_assigned.connect
    async def note_assignment(sender, assigned=frozenset(), **_kw) -> None:
        pipe.assigned = sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)
        pipe.write_status()

    @app.on_partitions_revoked.connect
    async def release_sequence(sender, revoked=frozenset(), **_kw) -> None:
        if TP(seq_name, 0) in revoked:
            async with pipe.lock:
                await pipe.deactivate("partition revoked")

    @app.on_before_shutdown.connect
    async def hand_over(sender, **_kw) -> None:
        """At a clean stop: release the lease now, so the next owner need not wait it out."""
        try:
            await asyncio.wait_for(pipe.lock.acquire(), 15.0)
        except asyncio.TimeoutError:
            return  # a batch is still being written: the lease expires after its TTL
        try:
            await pipe.deactivate("stopping")
        finally:
            pipe.lock.release()

    @app.timer(interval=0.5)
    async def tick_idle() -> None:
        pipe.loop_tick = time.monotonic()
        await pipe.tick_idle()

    @app.timer(interval=settings.inbox_prune_interval_s)
    async def prune_merge() -> None:  # processed positions leave merge_log (each source's last stays)
        async with pipe.lock:
            if not pipe.active:
                return
            try:
                n = await asyncio.to_thread(pipe.sink.prune_merge)
                if n:
                    log.info("pruned %d processed positions from merge_log", n)
            except Exception as exc:
                log.warning("merge_log pruning failed: %s", exc)

    pipe.metrics.attach(pipe, lag_source=lambda: group_progress(conn, settings.worker_id))
    pipe.sql_server = serve_sql(settings, probes(pipe))  # the embedded store's live read-only SQL
    pipe.ops_server = serve_ops(settings, pipe)
    return app, pipe


__all__ = ["Sequencer", "build_scaled_app", "envelope", "probes", "serve_sql"]


def read_input_log(conn, topic_names=topics.INPUT_TOPICS, timeout_s: float = 60.0) -> dict:
    """Every input partition's records, as intake would forward them: {(topic, partition):
    [Envelope, ...] in offset order} (audits and tests: processors/replay.py ``replay_merged``)."""
    from kafka import KafkaConsumer, TopicPartition

    from poa_stream.streams.connection import as_connection
    consumer = KafkaConsumer(**as_connection(conn).kafka_python(), enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in topic_names for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: dict = {(tp.topic, tp.partition): [] for tp in tps}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError("reading the input log back took too long")
            for tp, recs in consumer.poll(timeout_ms=500, max_records=5000).items():
                for r in recs:
                    if r.offset < end[tp]:
                        out[(tp.topic, tp.partition)].append(
                            envelope(tp.topic, tp.partition, r.offset, r.value, r.timestamp / 1000.0,
                                     r.headers))
        return out
    finally:
        consumer.close()
