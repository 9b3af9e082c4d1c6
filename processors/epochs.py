"""Event-time epochs: emission budgets, their exact split, and a Merkle root per epoch.

Epoch ``e`` covers event times ``[e * epoch_s, (e + 1) * epoch_s)``. Events are processed
in event-time order (processors/order.py), so an epoch *closes* when the first event of a
later epoch is processed; the last epoch stays open until time passes it.

Budget of epoch ``e``: ``emission_per_epoch_micro * (1 - emission_decay_bps / 10_000) ** k``
(rounded down to whole micro-units), ``k`` = epochs since the policy's genesis (never
the first event seen: an event cannot move the schedule), plus what the previous epoch
carried over. At close it is split in two pools by
``emission_contributors_bps`` / the rest: contributors by their **validated supply** at
close (policy ``emission_contributor_basis = "validated_supply"``: the summed pool weight,
distinct token windows, of their contributions whose status is ``accepted``; usage moves no
emission, so reporting usage of one's own data cannot pay: README "Economics"), or, under
the v1 rule ``"usage"``, by their attribution evidence in the epoch (the sum of their
attribution weights over the epoch's usage events); validators by their validation
evidence (the votes they cast in the epoch, each weighted at close by the validator's
informedness ``max(0, 2 * reliability - 1)``: colluders and coin-flippers earn ~nothing). Each pool is split
with largest remainder (attribution/split.py). **Carry-over rule**: a pool with no
eligible recipient is not paid; it is carried over whole to the next epoch's budget.
Invariant per epoch: ``emitted + carried_out == budget + carried_in``.

Datanet pools (processors/pools.py) are settled first at close, by the ``settle`` callback
given to :meth:`EpochBook.advance`: their rows join the epoch's entries, and the pooled
attribution mass joins the contributors' evidence before the emission split.

Ledger entries are booked into the epoch of their event, or into the open epoch when
that one is already closed (a late event), so a closed epoch's entries — and its
Merkle root (processors/merkle.py) — never change.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from poa_stream.attribution.split import split_amount
from poa_stream.processors.ledger import entry_id
from poa_stream.processors.merkle import epoch_leaves, root
from poa_stream.streams.policy import PolicySchedule

UNIX0 = datetime(1970, 1, 1, tzinfo=timezone.utc)


class EpochBook:
    """Epoch bookkeeping under a policy schedule (streams/policy.py): the epoch length is the
    store's (structural); each epoch's budget and pool split use the policy in force in that
    epoch, whose fingerprint the epoch's row records."""

    def __init__(self, schedule: PolicySchedule):
        self.schedule = schedule
        self.epoch_s = schedule.base.epoch_s
        self.open: int | None = None
        self.first = schedule.base.genesis_epoch  # the emission schedule's start (policy)
        self.carry = 0
        self.entries: list[dict] = []
        self.contrib: dict[str, float] = {}
        self.valid: dict[str, float] = {}

    def epoch_of(self, ts: datetime) -> int:
        return int((ts - UNIX0).total_seconds()) // self.epoch_s

    def closes(self, ts: datetime) -> bool:
        """Whether an event at ``ts`` closes the open epoch (:meth:`advance` would)."""
        return self.open is not None and self.epoch_of(ts) > self.open

    def booking_epoch(self, ts: datetime) -> int:
        e = self.epoch_of(ts)
        return e if self.open is None or e >= self.open else self.open

    def budget(self, epoch: int) -> int:
        p = self.schedule.at(epoch)
        k = max(0, epoch - self.first)
        return int(p.emission_per_epoch_micro * ((10_000 - p.emission_decay_bps) / 10_000) ** k)

    def add_contributor_evidence(self, account: str, weight: float) -> None:
        self.contrib[account] = self.contrib.get(account, 0.0) + weight

    def add_validator_evidence(self, account: str, weight: float) -> None:
        self.valid[account] = self.valid.get(account, 0.0) + weight

    def add_entries(self, rows: list[dict]) -> None:
        """Entries of the open epoch (rows of a closed one, its own closing rows, are done)."""
        self.entries.extend(r for r in rows if self.open is None or r["epoch"] >= self.open)

    def advance(self, ts: datetime, seq: int, validator_weight=None,
                settle=None, supply=None) -> tuple[list[dict], list[dict]]:
        """Close every epoch before the one of ``ts``: (settlement and emission ledger rows,
        epochs rows). ``validator_weight(account)`` scales a validator's votes at close
        (reliability); ``settle(epoch, end, seq)`` -> (pool settlement rows, the pool balance
        carried to the next epoch in micro-units); ``supply()`` -> contributor -> validated
        supply weight, what the contributors' pool follows under the policy's
        ``emission_contributor_basis = "validated_supply"``."""
        e = self.epoch_of(ts)
        if self.open is None:
            self.open = e
            return [], []
        ledger, epochs = [], []
        while self.open < e:
            lr, er = self._close(self.open, seq, validator_weight, settle, supply)
            ledger += lr
            epochs.append(er)
            self.open += 1
        return ledger, epochs

    def _pool(self, epoch: int, role: str, amount: int, evidence: dict[str, float],
              end: datetime, seq: int) -> list[dict]:
        names = sorted(a for a, w in evidence.items() if w > 0)
        if amount <= 0 or not names:
            return []
        parts = split_amount(amount, np.asarray([evidence[n] for n in names]))
        ref = f"epoch:{epoch}"
        return [{"entry_id": entry_id("emission", ref, role, n), "epoch": epoch, "account": n,
                 "role": role, "source": "emission", "amount": int(a), "ref_event_id": ref,
                 "ts": end, "seq": seq} for n, a in zip(names, parts) if a > 0]

    def _close(self, epoch: int, seq: int, validator_weight=None, settle=None,
               supply=None) -> tuple[list[dict], dict]:
        start = UNIX0 + timedelta(seconds=epoch * self.epoch_s)
        end = start + timedelta(seconds=self.epoch_s) - timedelta(milliseconds=1)
        settled, pool_carried = settle(epoch, end, seq) if settle else ([], 0)
        carried_in, budget = self.carry, self.budget(epoch)
        total = budget + carried_in
        policy = self.schedule.at(epoch)
        c_pool = total * policy.emission_contributors_bps // 10_000
        by_supply = policy.emission_contributor_basis == "validated_supply" and supply is not None
        rows = settled + self._pool(epoch, "contributor", c_pool, supply() if by_supply else self.contrib,
                                    end, seq)
        valid = ({a: w * validator_weight(a) for a, w in self.valid.items()} if validator_weight
                 else self.valid)
        rows += self._pool(epoch, "validator", total - c_pool, valid, end, seq)
        emitted = sum(r["amount"] for r in rows if r["source"] == "emission")
        self.carry = total - emitted
        entries = [r for r in self.entries if r["epoch"] == epoch] + rows
        ids, leaves = epoch_leaves(entries)
        fee = sum(r["amount"] for r in entries if r["source"] == "fee")
        row = {"epoch": epoch, "start": start, "end": end, "budget": budget,
               "carried_in": carried_in, "emitted": emitted, "carried_out": self.carry,
               "fee_rewards": fee, "emission_rewards": emitted,
               "pool_settled": sum(r["amount"] for r in settled if r["role"] != "pool"),
               "pool_carried": pool_carried, "entries": len(entries),
               "merkle_root": root(leaves).hex(), "policy_fingerprint": policy.fingerprint(),
               "seq": seq}
        self.entries = [r for r in self.entries if r["epoch"] != epoch]
        self.contrib, self.valid = {}, {}
        return rows, row
