"""Output recovery: publish the stored output rows above the committed mark, in bounded
windows and transactions, interruptible at any point.

The store holds every output row (``reward_ledger``, ``flags``, ``deadletter``) with the
``seq`` of the event that produced it; Kafka holds the committed mark (seq, pos)
(streams/outbox.py). :func:`publish_stored` streams the rows above the mark out of the
store in windows of consecutive seqs (about ``window_rows`` rows each, so never the whole
backlog in memory; a dead letter weighs more by its payload size, see ``_WEIGHT``; a single
seq heavier than a window, e.g. an epoch's emission to very many accounts, is read whole),
builds their messages in canonical (seq, pos) order (processors/messages.py), skips those
at or below the mark (a chunk may have ended inside a seq) and publishes them through the
outbox in transactions of at most ``outbox.max_messages``. It logs its progress at INFO.

Stopping: asyncio cancellation (Faust cancels the worker's tasks on SIGTERM) interrupts any
await; ``should_stop()`` (the worker passes "the app is stopping") is polled between
windows, every 1,000 messages and every 0.2 s while a store query runs, and raises
:class:`streams.outbox.Interrupted`. The open transaction is then aborted (bounded wait);
the chunks committed so far stay committed and the next start continues from them.
Blocking work (store queries, building messages) runs in threads; every store query is
bounded (``max_execution_time``), so an abandoned one ends by itself.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from poa_stream.processors.messages import DEADLETTER_PAYLOAD_CHARS, FLAG_FIELDS, REWARD_FIELDS, Positioned, positioned_messages
from poa_stream.sinks.base import Sink
from poa_stream.streams.outbox import WHOLE, Interrupted, Mark, TransactionalOutbox

log = logging.getLogger("poa.worker.output")

DEFAULT_WINDOW_ROWS = 50_000
QUERY_TIMEOUT_S = 120  # max_execution_time of each store query
_PAYLOAD_BYTES_MAX = 4 * DEADLETTER_PAYLOAD_CHARS  # UTF-8 bytes of the longest published payload

# ``ts`` formatted by the store exactly as streams.events.format_ts does (UTC, milliseconds,
# "Z"; the message builders pass strings through), instead of Python datetimes: reading and
# building a ledger row went from about 41 to 25 microseconds here.
_TS = "formatDateTime(ts, '%Y-%m-%dT%H:%i:%S.%fZ', 'UTC') AS ts"
_TS_SETTINGS = ", formatdatetime_f_prints_scale_number_of_digits = 1"


def _select(fields) -> str:
    return ", ".join(_TS if c == "ts" else f"`{c}`" for c in (*fields, "seq"))


_COLUMNS = {
    "reward_ledger": _select(REWARD_FIELDS),
    "flags": _select(FLAG_FIELDS),
    # the message carries the payload's first DEADLETTER_PAYLOAD_CHARS characters only
    "deadletter": _select(("event_id", "topic", "reason", "payload", "ts")).replace(
        "`payload`", f"substringUTF8(payload, 1, {DEADLETTER_PAYLOAD_CHARS}) AS payload"),
}
# A row's weight in a window: one per row, plus one per KiB of a dead letter's payload.
_WEIGHT = {"reward_ledger": "1", "flags": "1",
           "deadletter": f"1 + intDiv(least(length(payload), {_PAYLOAD_BYTES_MAX}), 1024)"}


@dataclass
class Recovery:
    """What one :func:`publish_stored` call did."""
    backlog: int = 0  # messages above the mark when it began
    messages: int = 0  # published (committed) by this call
    transactions: int = 0
    windows: int = 0
    mark: Mark | None = None  # the last committed (seq, pos), None if nothing was published
    seconds: float = 0.0


def _where(first: int, last: int | None) -> str:
    return f"seq >= {first}" + (f" AND seq <= {last}" if last is not None else "")


def _settings() -> str:
    return f" SETTINGS max_execution_time = {QUERY_TIMEOUT_S}"


def count_stored(sink: Sink, first: int, last: int | None = None) -> int:
    """Output rows with ``first <= seq <= last`` (``last`` None: no upper bound)."""
    db, w = sink.database, _where(first, last)
    parts = " UNION ALL ".join(f"SELECT count() AS n FROM {db}.{t} WHERE {w}" for t in _COLUMNS)
    return int(sink.scalar(f"SELECT sum(n) FROM ({parts})" + _settings()) or 0)


def window_end(sink: Sink, first: int, last: int | None, window_rows: int) -> int | None:
    """The last seq of the window that starts at ``first``: consecutive seqs whose rows
    weigh at most ``window_rows`` in all (at least one seq, however heavy); None when no
    output row has ``first <= seq <= last``."""
    db, w = sink.database, _where(first, last)
    parts = " UNION ALL ".join(f"SELECT seq, {_WEIGHT[t]} AS w FROM {db}.{t} WHERE {w}" for t in _COLUMNS)
    _, rows = sink.query(f"SELECT seq, sum(w) FROM ({parts}) GROUP BY seq ORDER BY seq "
                         f"LIMIT {int(window_rows)}" + _settings())
    end, total = None, 0
    for seq, weight in rows:
        if end is not None and total + weight > window_rows:
            break
        end, total = seq, total + weight
    return end


def load_window(sink: Sink, first: int, last: int, above: Mark | None = None) -> list[Positioned]:
    """The messages of the output rows with ``first <= seq <= last`` in canonical order,
    each as (seq, pos, message); only those above the mark ``above`` if given."""
    db, rows = sink.database, {}
    for table, cols in _COLUMNS.items():
        names, data = sink.query(f"SELECT {cols} FROM {db}.{table} WHERE {_where(first, last)}"
                                 + _settings() + _TS_SETTINGS)
        rows[table] = [dict(zip(names, r)) for r in data]
    items = positioned_messages(rows)
    del rows
    if above is not None and items and (items[0][0], items[0][1]) <= above:
        items = [it for it in items if (it[0], it[1]) > above]
    return items


async def until_stopped(aw: Awaitable, should_stop: Callable[[], bool] | None, poll_s: float = 0.2):
    """Await ``aw``, but raise :class:`Interrupted` as soon as ``should_stop()`` is true
    (``aw`` is cancelled; a thread behind it runs on to its own, bounded, end)."""
    if should_stop is None:
        return await aw
    task = asyncio.ensure_future(aw)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if should_stop():
                raise Interrupted("the worker is stopping")
    finally:
        if not task.done():
            task.cancel()


def next_window(sink: Sink, first: int, last: int | None, window_rows: int,
                above: Mark | None = None) -> tuple[int, list[Positioned]] | None:
    """The window that starts at ``first``: (its last seq, its messages), or None."""
    end = window_end(sink, first, last, window_rows)
    return None if end is None else (end, load_window(sink, first, end, above))


async def publish_stored(sink: Sink, outbox: TransactionalOutbox, mark: Mark, *, upto_seq: int | None = None,
                         window_rows: int = DEFAULT_WINDOW_ROWS, should_stop: Callable[[], bool] | None = None,
                         progress: bool = True) -> Recovery:
    """Publish the stored output messages above ``mark`` (and with ``seq <= upto_seq``, if
    given) through ``outbox``, each exactly once given that ``mark`` is the committed mark
    (streams/outbox.py :func:`published_mark`). Logs progress at INFO when ``progress``.

    The next window is read (in a thread) while the current one is published; messages
    are published in full chunks of ``outbox.max_messages`` (a window's remainder opens
    the next window's first chunk), so at most two windows and one chunk are in memory.
    Raises :class:`Interrupted` when ``should_stop()`` turns true, and whatever the store or
    Kafka raise; then stop the outbox and recover again from the committed mark."""
    t0 = last_log = time.monotonic()
    first = mark[0] + 1 if mark[1] >= WHOLE else mark[0]
    res = Recovery()
    res.backlog = await until_stopped(asyncio.to_thread(count_stored, sink, first, upto_seq), should_stop)
    if mark[1] < WHOLE:  # positions 0..pos of the mark's seq are committed
        res.backlog = max(0, res.backlog - mark[1] - 1)
    if progress and res.backlog:
        log.info("output recovery: %d stored messages above the committed mark (seq %d, pos %s), "
                 "in transactions of at most %d", res.backlog, mark[0],
                 "all" if mark[1] >= WHOLE else mark[1], outbox.max_messages)
    tx0, size = outbox.transactions, outbox.max_messages
    pending: list[Positioned] = []  # less than a chunk, carried into the next window
    loading = asyncio.ensure_future(asyncio.to_thread(next_window, sink, first, upto_seq, window_rows, mark))
    try:
        while True:
            if should_stop is not None and should_stop():
                raise Interrupted("the worker is stopping")
            window = await until_stopped(loading, should_stop)
            if window is None:
                break
            last, items = window
            loading = asyncio.ensure_future(asyncio.to_thread(next_window, sink, last + 1, upto_seq, window_rows))
            pending += items
            del items, window
            full = len(pending) - len(pending) % size
            if full:
                res.messages += await outbox.publish(pending[:full], should_stop)
                pending = pending[full:]
            res.windows += 1
            res.transactions, res.mark = outbox.transactions - tx0, outbox.mark
            now = time.monotonic()
            if progress and now - last_log >= 1.0:
                last_log = now
                log.info("output recovery: %d/%d messages, seq %d, %d transactions, %.0f messages/s",
                         res.messages, res.backlog, res.mark[0] if res.mark else mark[0], res.transactions,
                         res.messages / max(now - t0, 1e-9))
        if pending:
            res.messages += await outbox.publish(pending, should_stop)
    finally:
        if not loading.done():
            loading.cancel()  # its thread ends by itself: the queries are bounded
    res.transactions, res.mark = outbox.transactions - tx0, outbox.mark if res.messages else None
    res.seconds = time.monotonic() - t0
    if progress and res.messages:
        log.info("output recovery: %d/%d messages, seq %d, %d transactions, %.0f messages/s",
                 res.messages, res.backlog, res.mark[0], res.transactions, res.messages / max(res.seconds, 1e-9))
        log.info("output recovery done: %d messages in %d transactions, %.1fs", res.messages,
                 res.transactions, res.seconds)
    return res
