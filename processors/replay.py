"""``poa replay``: the same processing core, fed from a JSONL file instead of Kafka.

Each line is one raw event; its topic is the one its ``type`` belongs to (a line
that does not parse goes to ``poa.replay``, then to the dead letters). Rows are
written in batches of ``batch_events`` messages, ``events`` last in each batch. On
start the store's own log is replayed into the core first (after removing orphans
of an interrupted run), so replaying a file twice changes nothing the second time.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from collections.abc import Callable, Iterable
from pathlib import Path

from poa_stream.settings import Settings
from poa_stream.processors.core import Core, Result
from poa_stream.processors.snapshots import SnapshotError, Snapshots, code_fingerprint
from poa_stream.sinks.base import Sink
from poa_stream.sinks.lease import Lease
from poa_stream.sinks.policy_log import open_schedule
from poa_stream.streams import topics

REPLAY_TOPIC = "poa.replay"
log = logging.getLogger("poa.replay")


def topic_of(line: bytes) -> str:
    try:
        obj = json.loads(line)
        return topics.TOPIC_OF_TYPE.get(obj.get("type"), REPLAY_TOPIC) if isinstance(obj, dict) else REPLAY_TOPIC
    except (ValueError, RecursionError):
        return REPLAY_TOPIC


def restore(core: Core, sink: Sink, snapshots: Snapshots | None = None) -> int:
    """Remove orphans of an interrupted batch, rebuild the core's state (the newest usable
    snapshot, then the log after it; processors/snapshots.py), and buffer again the events
    received but not yet processed (the inbox). Returns the number of log rows replayed.
    The caller holds the store's writer lease (sinks/lease.py)."""
    last = sink.recover()
    n = _from_snapshot(core, sink, snapshots, last) if snapshots is not None else None
    if n is None:
        n = core.replay_log(sink.load_log())
    core.load_inbox(sink.load_inbox())
    sink.prune_inbox()
    core.log_source = sink.load_log  # what a rebuild after a handler error replays
    if snapshots is not None:
        core.snapshot_base = lambda seq: _state_at(snapshots, seq)
    return n


def _from_snapshot(core: Core, sink: Sink, snapshots: Snapshots, last_seq: int) -> int | None:
    """Load the newest usable snapshot into ``core`` and replay the log after it, checking
    that the tail reproduces the stored ledger rows; None: no usable snapshot (``core`` is
    left fresh)."""
    snapshots.clean_temporary()
    for info in snapshots.list():
        t0 = time.perf_counter()
        try:
            if info.seq > last_seq or sink.logged_key(info.seq) != info.event_id:
                raise SnapshotError(f"seq {info.seq} ({info.event_id}) is not in this store's log "
                                    f"(last seq {last_seq})")
            snapshots.check_schedule(info, core.schedule)
            snapshots.check_code(info, core)
            core.load_snapshot_state(snapshots.read(info))
            tail = Result()
            n = core.replay_log(sink.load_log(info.seq), tail)
            produced = sorted((r["entry_id"], int(r["amount"])) for r in tail.rows.get("reward_ledger", []))
            stored = sink.ledger_after(info.seq)
            if produced != stored:
                raise SnapshotError(f"the {n} events after it produce {len(produced)} ledger rows "
                                    f"that differ from the {len(stored)} stored")
        except SnapshotError as exc:
            snapshots.set_aside(info, str(exc))
            core.__init__(core.s, core.schedule)
            continue
        snapshots.last_seq, snapshots.last_open = info.seq, core.book.open
        log.info("core restored from snapshot %s (seq %d) + %d logged events in %.2fs",
                 info.path.name, info.seq, n, time.perf_counter() - t0)
        return n
    return None


def _state_at(snapshots: Snapshots, seq: int) -> dict | None:
    """State of the newest readable snapshot at or before ``seq`` (a rebuild's base)."""
    for info in snapshots.list():
        if info.seq <= seq and info.header.get("code") == code_fingerprint():
            try:
                return snapshots.read(info)
            except SnapshotError:
                continue
    return None


def iter_lines(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def step(core: Core, topic: str, raw: bytes, lateness_s: float = 0.0) -> Result:
    """Take one message and release what a single source allows: events older than the
    latest event time seen minus ``lateness_s`` (how far out of order events may come)."""
    res = core.process(topic, raw)
    if core.max_seen_ts is not None:
        try:
            wm = core.max_seen_ts - timedelta(seconds=lateness_s)
        except OverflowError:  # lateness beyond the calendar: hold everything until the end
            return res
        res.extend(core.release(wm))
    return res


def process_all(settings: Settings, lines: Iterable[tuple[str, bytes]]) -> tuple[Core, Result]:
    """The whole replay in memory, without a store: (the core, every row and message)."""
    core, out = Core(settings), Result()
    for topic, raw in lines:
        out.extend(step(core, topic, raw, core.P.order_lateness_s))
    out.extend(core.release(None))
    return core, out


def replay(lines: Iterable[tuple[str, bytes]], core: Core, sink: Sink, batch_events: int = 2000,
           on_progress: Callable[[int], None] | None = None, in_order: bool = False,
           snapshots: Snapshots | None = None, snapshot_every: int = 0) -> None:
    """Process (topic, raw) pairs through ``core`` and write them to ``sink`` in batches.

    One source: an event is released once an event ``settings.order_lateness_s``
    later has been seen, so events up to that far out of order are still processed
    in :func:`processors.order.order_key` order, like the worker merging partitions;
    everything is released at the end. ``in_order``: the lines are a processing log (the
    ``events`` table's payloads by ``seq``): each is processed at once, in file order, which
    reproduces that run's ledger and epoch roots exactly. ``snapshots``: after a batch is
    stored, a snapshot is written when one is due (:meth:`Snapshots.due`), the end included.
    """
    batch, n = Result(), 0
    lateness_s = core.schedule.base.order_lateness_s
    core.log_order = in_order
    for topic, raw in lines:
        if in_order:
            batch.extend(core.process(topic, raw))
            batch.extend(core.release(None))
        else:
            batch.extend(step(core, topic, raw, lateness_s))
        n += 1
        if n % batch_events == 0:
            batch.rows["inbox"] = core.inbox_rows()
            sink.write_retrying(batch.rows, log=log.warning)
            core.written()
            batch = Result()
            if snapshots is not None and snapshots.due(core, snapshot_every):
                snapshots.write(core)
            if on_progress:
                on_progress(n)
    batch.extend(core.release(None))
    core.inbox_rows()
    sink.write_retrying(batch.rows, log=log.warning)
    core.written()
    if snapshots is not None and snapshots.due(core, snapshot_every):
        snapshots.write(core)
    if on_progress:
        on_progress(n)


def replay_into(records: Iterable[tuple[str, bytes]], settings: Settings, sink: Sink,
                on_progress: Callable[[int], None] | None = None, in_order: bool = False,
                snapshot_at_end: bool = False) -> Core:
    """The whole audited path without Kafka: schema, the store's writer lease (refused while
    a worker or another replay writes the store), the core rebuilt from the store's log, then
    ``records`` processed and written in batches; the lease is released at the end."""
    sink.retrying(sink.ensure_schema, "creating the schema", log=log.warning)
    lease = Lease(sink, ttl_s=settings.store_lease_ttl_s)
    sink.retrying(lease.acquire, "taking the writer lease", log=log.warning)
    try:
        snaps = Snapshots.for_settings(settings) if settings.snapshot_every_events > 0 else None

        def rebuild() -> Core:
            c = Core(settings, open_schedule(sink, settings.policy()))
            restore(c, sink, snaps)
            return c
        core = sink.retrying(rebuild, "rebuilding the core from the store", log=log.warning)
        core.restored_seq = core.seq
        replay(records, core, sink, batch_events=settings.replay_batch_events,
               on_progress=on_progress, in_order=in_order,
               snapshots=snaps, snapshot_every=settings.snapshot_every_events)
        if snaps is not None and snapshot_at_end and core.seq > 0 and snaps.last_seq != core.seq:
            snaps.write(core)
    finally:
        lease.release()
    return core


def replay_file(path: Path, settings: Settings, sink: Sink,
                on_progress: Callable[[int], None] | None = None, in_order: bool = False) -> Core:
    from poa_stream.attribution import warmup
    warmup()
    return replay_into(((topic_of(l), l) for l in iter_lines(path)), settings, sink,
                       on_progress=on_progress, in_order=in_order)


def feed(core: Core, held) -> Result:
    """Process one message the merge released (processors/merge.py ``Held``), as the
    sequence owner does: at once, in release order, bounded by its Kafka record time."""
    from datetime import datetime, timezone
    rts = (datetime.fromtimestamp(held.record_ts_ms / 1000.0, timezone.utc)
           if held.record_ts_ms is not None else None)
    res = core.process(held.topic, held.raw, held.partition, True, record_ts=rts)
    res.extend(core.release(None))
    return res


def replay_merged(settings: Settings, per_source) -> tuple[Core, Result]:
    """The scaled topology's processing of a finite input log without Kafka: each source's
    envelopes (processors/merge.py; in offset order) merged, then fed to the core one by one
    like the sequence owner feeds them (:func:`feed`). The reference the scaled worker must equal."""
    from poa_stream.processors.merge import merged_order
    core, res = Core(settings), Result()
    for held in merged_order(per_source):
        res.extend(feed(core, held))
    return core, res
