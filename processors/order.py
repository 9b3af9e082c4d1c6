"""Event-time ordering: the processing order does not depend on Kafka's interleaving.

Messages from several topics and partitions arrive interleaved in an order that
changes from run to run (and across a crash). The core therefore buffers valid
events and processes them in :func:`order_key` order — event time, then type
(contributions before models before validations before usage at the same instant),
then ``event_id`` — releasing an event only once the *watermark* has passed it.

The watermark (:class:`Watermarks`) is the smallest "latest event time seen" over
the sources (topic, partition) that still have data to deliver: a partition that
is caught up (its last delivered offset is its high-water mark) no longer holds it
back. Until every expected source has delivered once, nothing is released; when no
message has arrived for a while the worker releases everything (``None``). Within a
partition event time is assumed non-decreasing; an event older than what was
already released is *late* and is processed at once, in arrival order.
"""
from __future__ import annotations

from datetime import datetime, timedelta

TYPE_RANK = {"contribution": 0, "model": 1, "validation": 2, "usage": 3}
Source = tuple[str, int]


def order_key(ev) -> tuple:
    return (ev.ts, TYPE_RANK[ev.type], ev.event_id)


class Watermarks:
    """Per source: the latest event time it delivered, whether it is caught up, and how many
    messages in a row brought no new event (re-deliveries, dead letters). A re-delivery still
    tells where the source is in event time (after a crash a partition re-delivers what it
    had), but it is not progress: a source that delivered ``stall_messages`` messages in a
    row without a new event *and* whose latest event time trails the newest of any source by
    more than ``lateness_s`` no longer holds the watermark, until it makes progress again. So
    a partition that only repeats a stale event cannot hold back the others."""

    def __init__(self, stall_messages: int = 1000, lateness_s: float = 3600.0) -> None:
        self.max_ts: dict[Source, datetime] = {}
        self.caught_up: dict[Source, bool] = {}
        self.idle: dict[Source, int] = {}
        self.stall_messages = stall_messages
        self.lateness = timedelta(seconds=lateness_s)

    def observe(self, source: Source, ts: datetime | None, caught_up: bool, progress: bool = True) -> None:
        """``ts``: the event time the message carries (None: unknown, e.g. invalid);
        ``progress``: it was a new event (not a re-delivery or a refused one)."""
        if ts is not None and (source not in self.max_ts or ts > self.max_ts[source]):
            self.max_ts[source] = ts
        self.idle[source] = 0 if progress and ts is not None else self.idle.get(source, 0) + 1
        self.caught_up[source] = caught_up

    def stalled(self, source: Source) -> bool:
        if self.idle.get(source, 0) < self.stall_messages or source not in self.max_ts:
            return False
        return self.max_ts[source] + self.lateness < max(self.max_ts.values())

    def value(self, expected: set[Source] | None = None) -> datetime | None | bool:
        """The watermark; ``False`` while an expected source has not delivered yet
        (hold everything); ``None`` when no source holds it back (release everything)."""
        if expected and not expected <= self.caught_up.keys():
            return False
        active = [ts for src, ts in self.max_ts.items()
                  if not self.caught_up.get(src, False) and not self.stalled(src)]
        return min(active) if active else None
