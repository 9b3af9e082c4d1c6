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

from datetime import datetime

TYPE_RANK = {"contribution": 0, "model": 1, "validation": 2, "usage": 3}
Source = tuple[str, int]


def order_key(ev) -> tuple:
    return (ev.ts, TYPE_RANK[ev.type], ev.event_id)


class Watermarks:
    def __init__(self) -> None:
        self.max_ts: dict[Source, datetime] = {}
        self.caught_up: dict[Source, bool] = {}

    def observe(self, source: Source, ts: datetime | None, caught_up: bool) -> None:
        if ts is not None and (source not in self.max_ts or ts > self.max_ts[source]):
            self.max_ts[source] = ts
        self.caught_up[source] = caught_up

    def value(self, expected: set[Source] | None = None) -> datetime | None | bool:
        """The watermark; ``False`` while an expected source has not delivered yet
        (hold everything); ``None`` when no source holds it back (release everything)."""
        if expected and not expected <= self.caught_up.keys():
            return False
        active = [ts for src, ts in self.max_ts.items() if not self.caught_up.get(src, False)]
        return min(active) if active else None
