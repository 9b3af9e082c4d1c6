"""Failpoints: make a handler raise on chosen events, to test the core's error boundary.

``POA_FAILPOINTS`` (read once at import) is a comma-separated list of ``site:event_id``;
the only site is ``apply`` (raised after the handler of that event has run, so its state
changes must be undone). Empty by default: production never sets it. Tests may also
add entries to :data:`ACTIVE` directly.
"""
from __future__ import annotations

import os


class FailpointError(RuntimeError):
    """Raised at an active failpoint."""


ACTIVE: set[tuple[str, str]] = {
    tuple(x.strip().split(":", 1)) for x in os.environ.get("POA_FAILPOINTS", "").split(",")
    if ":" in x
}


def hit(site: str, ev) -> None:
    if ACTIVE and (site, ev.event_id) in ACTIVE:
        raise FailpointError(f"failpoint {site}:{ev.event_id}")
