"""Escrow: a usage's credit to a contribution not yet accepted is held until validators decide.

A usage may be attributed to a *pending* contribution (eligible: not duplicate, rejected or
spam, but not accepted either). Its contributor credit then goes to the ledger account
``escrow:<contribution_id>`` (role ``escrow``, source ``fee``): booked, in the epoch's
Merkle root and on the reward stream like any entry, but nobody's to spend. When the
contribution's status next changes (a vote, the epoch-close status refresh, a farm found
later), at the end of that event:

- ``accepted``: **released**, two rows, source ``escrow``, ``ref_event_id``
  ``escrow:<contribution_id>:<event_id>`` (the resolving event): ``-H`` on the escrow account (role ``escrow``) and
  ``+H`` to the contributor (role ``contributor``);
- ``rejected``, ``duplicate`` or ``spam``: **forfeited**: ``-H`` on the escrow account and
  ``+H`` to the pool of the contribution's datanet (account ``pool:<datanet>``, role
  ``pool``), which the epoch close settles over the datanet's accepted contributions
  (processors/pools.py): the money stays with the data that was used, never with the
  account whose contribution failed;
- ``pending`` again: still held.

``H`` is the whole held balance, so each escrow account nets to zero at each resolution;
credit booked after a release is held again (if the contribution is pending again) and
resolved at its next change. Every resolution's rows sum to zero, so each usage's fee
entries still sum to its fee and the ledger's total is unchanged. Rows are booked into
the epoch of the resolving event (a closed epoch never changes). Only the contributor
share is held; validators who voted are paid at once (their work is done).
"""
from __future__ import annotations

from datetime import datetime

from poa_stream.processors.ledger import ESCROW_PREFIX, entry_id
from poa_stream.processors.pools import pool_account


def escrow_account(contribution_id: str) -> str:
    return ESCROW_PREFIX + contribution_id


class Escrow:
    """Held micro-units per contribution index, and the indices whose status changed."""

    def __init__(self) -> None:
        self.held: dict[int, int] = {}

    def hold(self, idx: int, amount: int) -> None:
        if amount:
            self.held[idx] = self.held.get(idx, 0) + int(amount)

    def resolve(self, changed: list[int], status_of, contribution_of, epoch: int, ts: datetime,
                seq: int, event_id: str) -> tuple[list[dict], dict[str, int]]:
        """Ledger rows for the held balances of ``changed`` contribution indices (ascending,
        each once) whose status is now final-for-now (accepted: release; ineligible: forfeit),
        and the forfeited amount per datanet (for the pools). ``status_of(idx)``,
        ``contribution_of(idx)`` -> (contribution_id, contributor, datanet); ``event_id``:
        the resolving event (the entry ids depend on it, never on ``seq``, which differs
        between runs that logged dead letters in another order)."""
        rows: list[dict] = []
        forfeited: dict[str, int] = {}
        for idx in sorted(set(changed)):
            amount = self.held.get(idx, 0)
            status = status_of(idx)
            if amount == 0 or status == "pending":
                continue
            cid, contributor, datanet = contribution_of(idx)
            ref = f"escrow:{cid}:{event_id}"  # not the seq: arrival order must not change ids
            if status == "accepted":
                to, role = contributor, "contributor"
            else:
                to, role = pool_account(datanet), "pool"
                forfeited[datanet] = forfeited.get(datanet, 0) + amount
            rows.append(_row(ref, epoch, escrow_account(cid), "escrow", -amount, ts, seq))
            rows.append(_row(ref, epoch, to, role, amount, ts, seq))
            del self.held[idx]
        return rows, forfeited


def _row(ref: str, epoch: int, account: str, role: str, amount: int, ts: datetime, seq: int) -> dict:
    return {"entry_id": entry_id("escrow", ref, role, account), "epoch": epoch, "account": account,
            "role": role, "source": "escrow", "amount": int(amount), "ref_event_id": ref,
            "ts": ts, "seq": seq}
