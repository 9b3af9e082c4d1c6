"""Failpoints: make a handler raise on chosen events, to test the core's error boundary.

``POA_FAILPOINTS`` (read once at import) is a comma-separated list of ``site:name``:
``apply:<event_id>`` raises after the handler of that event has run (so its state changes
must be undone); ``corrupt:<table>`` makes the worker's next batch carry an impossible value
in that table's first row (its first integer column set to -1), as a bug would;
``kill:<place>@<n>`` sends SIGKILL to this process the ``n``-th time it reaches ``place``
(``snapshot``: half-way through writing a snapshot file). Empty by
default: production never sets it. Tests may also add entries to :data:`ACTIVE` directly.
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


_reached: dict[str, int] = {}


def kill(place: str, _detail=None) -> None:
    """SIGKILL this process at the ``n``-th visit of ``place`` when ``kill:<place>@<n>`` is set."""
    if not ACTIVE:
        return
    n = _reached[place] = _reached.get(place, 0) + 1
    if ("kill", f"{place}@{n}") in ACTIVE:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


def corrupt(rows: dict[str, list[dict]]) -> None:
    """Apply ``corrupt:<table>`` failpoints to a batch's rows (see the module doc)."""
    if not ACTIVE:
        return
    for site, table in ACTIVE:
        if site == "corrupt" and rows.get(table):
            row = rows[table][0]
            col = next(c for c, v in row.items() if isinstance(v, int) and not isinstance(v, bool))
            row[col] = -1
