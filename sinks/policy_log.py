"""The store's policy log: every ledger policy the store ran under, and the start-up gate.

Table ``policy``: ``version`` (1, 2, ...), ``effective_epoch`` (the first epoch it governs),
``fingerprint``, ``policy`` (canonical JSON of streams.policy.Policy), ``recorded`` (store
time) and ``note``. Rows are only appended, by :func:`open_schedule` (the first policy of
a store) and :func:`apply` (``poa policy apply``).

:func:`open_schedule` is the gate every writer passes at start (worker, replay, demo): the
configured policy must equal the store's latest, else :class:`PolicyMismatch` names each
differing field and says how to change policy explicitly.
"""
from __future__ import annotations

from poa_stream.sinks.base import Sink
from poa_stream.streams.policy import Policy, PolicyMismatch, PolicySchedule, structural_changes

POLICY_DDL = """CREATE TABLE IF NOT EXISTS {db}.policy (
  `version` UInt32, `effective_epoch` UInt32, `fingerprint` String, `policy` String,
  `recorded` DateTime64(3, 'UTC'), `note` String
) ENGINE = MergeTree ORDER BY version"""


def _q(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def load(sink: Sink) -> list[tuple[int, int, Policy]]:
    """(version, effective_epoch, policy) in version order; empty for a new store."""
    _, rows = sink.query(f"SELECT version, effective_epoch, policy FROM {sink.database}.policy "
                         "ORDER BY version")
    return [(int(v), int(e), Policy.from_json(p)) for v, e, p in rows]


def record(sink: Sink, version: int, effective_epoch: int, policy: Policy, note: str) -> None:
    sink.command(f"INSERT INTO {sink.database}.policy SELECT {int(version)}, {int(effective_epoch)}, "
                 f"{_q(policy.fingerprint())}, {_q(policy.canonical())}, now64(3), {_q(note)} "
                 "SETTINGS async_insert = 0")


def open_schedule(sink: Sink, configured: Policy) -> PolicySchedule:
    """The store's policy schedule, after checking that ``configured`` is its latest policy.
    A new store records ``configured`` as version 1, effective from epoch 0."""
    log = load(sink)
    if not log:
        record(sink, 1, 0, configured, "first policy of this store")
        return PolicySchedule.single(configured)
    latest = log[-1][2]
    if latest != configured:
        diffs = latest.diff(configured)
        raise PolicyMismatch(
            f"the configured ledger policy ({configured.fingerprint()}) differs from the one the "
            f"store runs under (version {log[-1][0]}, {latest.fingerprint()}): "
            + "; ".join(diffs) + ". Set these back, or change policy explicitly with "
            "`poa policy apply --effective-epoch E` (a new epoch; closed epochs never change).")
    return PolicySchedule([(e, p) for _, e, p in log])


def processed_epoch(sink: Sink, epoch_s: int) -> int | None:
    """The epoch of the latest event time processed into the store (None: none yet)."""
    v = sink.scalar(f"SELECT max(toUnixTimestamp64Milli(ts)) FROM {sink.database}.events "
                    "WHERE type != 'invalid'")
    if v is None or int(v) == 0:
        n = sink.scalar(f"SELECT count() FROM {sink.database}.events WHERE type != 'invalid'")
        if not n:
            return None
    return int(v) // 1000 // epoch_s


def apply(sink: Sink, new: Policy, effective_epoch: int | None, note: str = "") -> tuple[int, int, list[str]]:
    """Record ``new`` as the store's next policy from ``effective_epoch`` (default: the epoch
    after the latest processed event). Refuses structural changes, an epoch at or before any
    processed event's epoch (it would rewrite or split a closed or open epoch), and an epoch
    before the latest policy's. Returns (version, effective epoch, the changes)."""
    log = load(sink)
    if not log:
        raise ValueError("this store has no policy yet: run the worker or `poa replay` once, "
                         "which records the configured policy as version 1")
    version, latest_epoch, latest = log[-1]
    if new == latest:
        raise ValueError(f"the configured policy is already the store's (version {version}, "
                         f"{latest.fingerprint()}): nothing to apply")
    if bad := structural_changes(log[0][2], new):
        raise ValueError("these policy fields are fixed for a store's life (they shape its "
                         "indexes or epoch grid): " + "; ".join(bad))
    done = processed_epoch(sink, log[0][2].epoch_s)
    first_allowed = max(latest_epoch + 1, (done + 1) if done is not None else 0)
    if effective_epoch is None:
        effective_epoch = first_allowed
    if effective_epoch < first_allowed:
        raise ValueError(f"--effective-epoch {effective_epoch} is too early: events up to epoch "
                         f"{done} are processed and the latest policy starts at epoch {latest_epoch}; "
                         f"the earliest allowed is {first_allowed}")
    changes = latest.diff(new)
    record(sink, version + 1, effective_epoch, new, note or "; ".join(changes))
    return version + 1, effective_epoch, changes
