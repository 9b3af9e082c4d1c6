"""The core's value types: a processing result, a contribution's state, counters."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from poa_stream.streams.events import canonical_json, event_to_dict


@dataclass
class Result:
    rows: dict[str, list[dict]] = field(default_factory=dict)
    messages: list[tuple[str, str, bytes]] = field(default_factory=list)  # (topic, key, value)

    def add(self, table: str, row: dict) -> None:
        self.rows.setdefault(table, []).append(row)

    def extend(self, other: "Result") -> None:
        for t, rs in other.rows.items():
            self.rows.setdefault(t, []).extend(rs)
        self.messages.extend(other.messages)


_ELIGIBILITY = [0]


def eligibility_version() -> int:
    """A counter bumped whenever any contribution's ``status`` is set to a new value (in any
    core of this process): caches of eligible contributions key on it, so they are never stale."""
    return _ELIGIBILITY[0]


@dataclass
class ContributionState:
    idx: int
    contribution_id: str
    contributor: str
    datanet: str
    kind: str
    ts: datetime
    status: str
    duplicate_of: str
    content_hash: str
    tokens: int
    license: str
    stake: int
    qualities: list[float] = field(default_factory=list)
    voters: dict[str, tuple[str, int]] = field(default_factory=dict)  # validator -> (verdict, stake)
    accepting: tuple | None = None  # cache: (len(voters), [(validator, stake weight)])
    # the core's processors/corpus.py columns, kept current on every status change
    arrays: object = field(default=None, repr=False, compare=False)

    def __setattr__(self, name, value):
        if name == "status" and self.__dict__.get("status") != value:
            _ELIGIBILITY[0] += 1
            if self.__dict__.get("arrays") is not None:
                self.arrays.set_status(self.idx, value)
        object.__setattr__(self, name, value)


@dataclass
class Stats:
    processed: int = 0
    redelivered: int = 0
    deadlettered: int = 0
    duplicates: int = 0
    spam: int = 0
    waiting: int = 0
    late: int = 0
    quarantined: int = 0  # events whose handler raised (dead-lettered, nothing applied)
    rejected: int = 0  # events refused at intake or release (time, signature, duplicates)
    expired: int = 0  # waiting events dead-lettered after waiting too long
    by_type: dict[str, int] = field(default_factory=dict)
    fees_micro: int = 0
    credits_micro: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, role)


def encode(ev) -> bytes:
    return canonical_json(event_to_dict(ev))
