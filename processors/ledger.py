"""Fee splitting into ledger rows: contributors, operator, validators, protocol treasury.

Contract: ``fee_credits(...)`` returns rows whose ``amount`` values sum exactly to
``fee`` (integer micro-units). Role buckets are split by the configured basis points
with largest remainder; the contributor bucket by attribution weight; the validator
bucket by each accepting validator's stake-weighted share of the attributed
contributions. The share of the usage with no evidence goes to datanet pools
(``pools``: account ``pool:<datanet>``, role ``pool``; one entry per datanet, its
contributor and validator parts together), settled at epoch close (processors/pools.py):
both the contributor and the validator bucket are split over their recipients and the
pools by weight. A bucket with no recipient at all goes to the protocol treasury
(role ``protocol``, reason visible in the ``source`` column staying ``fee``). A contributor
name starting with ``escrow:`` is a held credit (role ``escrow``, processors/escrow.py).
Recipients are ordered by account name before splitting, so ties are deterministic.
"""
from __future__ import annotations

import hashlib
from datetime import datetime

import numpy as np

from poa_stream.attribution.split import split_amount

ROLES = ("contributor", "operator", "validator", "protocol", "pool", "escrow")
POOL_PREFIX = "pool:"  # pool accounts: pool:<datanet> (no other account may start so)
ESCROW_PREFIX = "escrow:"  # held credit of a contribution not yet accepted: escrow:<contribution_id>


def entry_id(source: str, ref_event_id: str, role: str, account: str) -> str:
    key = f"{source}|{ref_event_id}|{role}|{account}".encode()
    return hashlib.blake2b(key, digest_size=12).hexdigest()


def _merge(accounts: list[str], weights: list[float]) -> tuple[list[str], np.ndarray]:
    acc: dict[str, float] = {}
    for a, w in zip(accounts, weights):
        if w > 0:
            acc[a] = acc.get(a, 0.0) + w
    names = sorted(acc)
    return names, np.asarray([acc[n] for n in names], dtype=np.float64)


def fee_credits(*, fee: int, shares_bps: tuple[int, int, int, int], operator: str,
                contributors: list[str], contributor_weights: list[float],
                validators: list[str], validator_weights: list[float],
                treasury: str, ref_event_id: str, ts: datetime, epoch: int,
                seq: int, pools: list[str] = (), pool_weights: list[float] = ()) -> list[dict]:
    rows: list[dict] = []
    if fee == 0:
        return rows
    buckets = split_amount(fee, np.asarray(shares_bps, dtype=np.int64))
    credit: dict[tuple[str, str], int] = {}

    def add(role: str, account: str, amount: int) -> None:
        if amount:
            credit[(role, account)] = credit.get((role, account), 0) + int(amount)

    pools, pool_weights = list(pools), list(pool_weights)

    def bucket(role: str, names: list[str], weights: list[float], amount: int) -> None:
        names, w = _merge(names + pools, list(weights) + pool_weights)
        if len(names) and w.sum() > 0:
            for name, amt in zip(names, split_amount(amount, w)):
                add("pool" if name.startswith(POOL_PREFIX) else
                    "escrow" if name.startswith(ESCROW_PREFIX) else role, name, amt)
        else:
            add("protocol", treasury, amount)

    bucket("contributor", contributors, contributor_weights, int(buckets[0]))
    add("operator", operator, buckets[1])
    bucket("validator", validators, validator_weights, int(buckets[2]))
    add("protocol", treasury, buckets[3])
    for (role, account), amount in sorted(credit.items(), key=lambda kv: (ROLES.index(kv[0][0]), kv[0][1])):
        rows.append({"entry_id": entry_id("fee", ref_event_id, role, account), "epoch": epoch,
                     "account": account, "role": role, "source": "fee", "amount": amount,
                     "ref_event_id": ref_event_id, "ts": ts, "seq": seq})
    return rows
