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
from datetime import timedelta
from collections.abc import Callable, Iterable
from pathlib import Path

from poa.settings import Settings
from processors.core import Core, Result
from sinks.base import Sink
from sinks.lease import Lease
from sinks.policy_log import open_schedule
from streams import topics

REPLAY_TOPIC = "poa.replay"
log = logging.getLogger("poa.replay")


def topic_of(line: bytes) -> str:
    try:
        obj = json.loads(line)
        return topics.TOPIC_OF_TYPE.get(obj.get("type"), REPLAY_TOPIC) if isinstance(obj, dict) else REPLAY_TOPIC
    except (ValueError, RecursionError):
        return REPLAY_TOPIC


def restore(core: Core, sink: Sink) -> int:
    """Remove orphans of an interrupted batch, rebuild the core's state from the log,
    and buffer again the events received but not yet processed (the inbox). The caller
    holds the store's writer lease (sinks/lease.py)."""
    sink.recover()
    n = core.replay_log(sink.load_log())
    core.load_inbox(sink.load_inbox())
    sink.prune_inbox()
    core.log_source = sink.load_log  # what a rebuild after a handler error replays
    return n


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
           on_progress: Callable[[int], None] | None = None, in_order: bool = False) -> None:
    """Process (topic, raw) pairs through ``core`` and write them to ``sink`` in batches.

    One source: an event is released once an event ``settings.order_lateness_s``
    later has been seen, so events up to that far out of order are still processed
    in :func:`processors.order.order_key` order, like the worker merging partitions;
    everything is released at the end. ``in_order``: the lines are a processing log (the
    ``events`` table's payloads by ``seq``): each is processed at once, in file order, which
    reproduces that run's ledger and epoch roots exactly.
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
            if on_progress:
                on_progress(n)
    batch.extend(core.release(None))
    core.inbox_rows()
    sink.write_retrying(batch.rows, log=log.warning)
    core.written()
    if on_progress:
        on_progress(n)


def replay_into(records: Iterable[tuple[str, bytes]], settings: Settings, sink: Sink,
                on_progress: Callable[[int], None] | None = None, in_order: bool = False) -> Core:
    """The whole audited path without Kafka: schema, the store's writer lease (refused while
    a worker or another replay writes the store), the core rebuilt from the store's log, then
    ``records`` processed and written in batches; the lease is released at the end."""
    sink.retrying(sink.ensure_schema, "creating the schema", log=log.warning)
    lease = Lease(sink, ttl_s=settings.store_lease_ttl_s)
    sink.retrying(lease.acquire, "taking the writer lease", log=log.warning)
    try:
        def rebuild() -> Core:
            c = Core(settings, open_schedule(sink, settings.policy()))
            restore(c, sink)
            return c
        core = sink.retrying(rebuild, "rebuilding the core from the store", log=log.warning)
        core.restored_seq = core.seq
        replay(records, core, sink, on_progress=on_progress, in_order=in_order)
    finally:
        lease.release()
    return core


def replay_file(path: Path, settings: Settings, sink: Sink,
                on_progress: Callable[[int], None] | None = None, in_order: bool = False) -> Core:
    from attribution import warmup
    warmup()
    return replay_into(((topic_of(l), l) for l in iter_lines(path)), settings, sink,
                       on_progress=on_progress, in_order=in_order)
