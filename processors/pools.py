"""Datanet pools: the share of usage fees with no evidence, settled once per epoch.

A usage credits at most ``attribution_top_k`` contributions by evidence (span matches,
the operator's influence scores). The rest of its contributor and validator buckets goes
to one ledger entry per datanet of its lineage (account ``pool:<datanet>``, role
``pool``, source ``fee``), with the attribution mass it stands for. So the rows, reward
messages and work of a usage are bounded by K plus the lineage's datanets, whatever the
size of the corpus.

Settlement, when an epoch closes (before its emissions, so the pooled mass counts as
attribution evidence), per datanet with a positive balance, in datanet-name order:
- recipients: the datanet's *accepted* contributions at that moment (validators accepted
  them: a pending contribution's share would be escrowed, processors/escrow.py, so pools
  pay validated supply only), weighted by ``CorpusArrays.weight`` (distinct token windows, so
  splitting a text into many uploads gains nothing); one vectorized pass;
- the balance ``B`` is split exactly (largest remainder, attribution/split.py) into a
  contributor part and a validator part by the policy's contributor:validator fee shares;
  the contributor part over contributors by the summed weight of their contributions; the
  validator part over the accepting validators of those contributions, each
  contribution's weight shared by its accepting validators' fee weights (reliability) and
  stakes, as for a usage; no accepting validator: that part goes to the treasury;
- rows (source ``pool``, ``ref_event_id`` ``pool:<datanet>:epoch:<e>``): the credits, and
  one debit of ``-B`` on ``pool:<datanet>`` (role ``pool``); so the credits of a settlement
  sum to the balance, each settled pool account nets to zero in its epoch, and every
  usage's fee entries still sum to its fee;
- no accepted contribution: nothing is paid; the balance (and its mass) is carried to the
  next epoch's settlement.
These rows are part of the epoch's entries and Merkle root (processors/epochs.py), so
``poa proof`` covers settled credits like any other.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np

from poa_stream.attribution.split import split_amount
from poa_stream.processors.corpus import CorpusArrays
from poa_stream.processors.ledger import POOL_PREFIX, entry_id


def pool_account(datanet: str) -> str:
    return POOL_PREFIX + datanet


class Pools:
    """Open balances per datanet (micro-units) and the attribution mass they stand for."""

    def __init__(self):
        self.balance: dict[str, int] = {}
        self.mass: dict[str, float] = {}

    def add(self, datanet: str, amount: int, mass: float) -> None:
        self.balance[datanet] = self.balance.get(datanet, 0) + int(amount)
        self.mass[datanet] = self.mass.get(datanet, 0.0) + mass

    def settle(self, epoch: int, end: datetime, seq: int, corpus: CorpusArrays,
               shares_bps: tuple[int, int, int, int], treasury: str,
               accepting: Callable[[int], list[tuple[str, float]]],
               fee_weight: Callable[[str], float],
               add_evidence: Callable[[str, float], None]) -> tuple[list[dict], int]:
        """(ledger rows settling every positive balance (module docstring), the balance
        carried over: pools with no eligible recipient stay for the next epoch)."""
        rows: list[dict] = []
        for dn in sorted(self.balance):
            bal, mass = self.balance[dn], self.mass.get(dn, 0.0)
            if bal <= 0 and mass <= 0:
                continue
            idx = corpus.accepted_in(dn)  # validated supply only, like escrow and emissions
            w = corpus.weight[idx]
            if idx.shape[0] == 0 or int(w.sum()) == 0:
                continue  # carried over
            ref = f"pool:{dn}:epoch:{epoch}"
            credit: dict[tuple[str, str], int] = {}
            c_bps, v_bps = shares_bps[0], shares_bps[2]
            c_part, v_part = ((bal, 0) if c_bps + v_bps == 0 else
                              (int(x) for x in split_amount(bal, np.asarray([c_bps, v_bps], dtype=np.int64))))
            codes = corpus.contributor[idx]
            per_code = np.bincount(codes, weights=w.astype(np.float64))
            used = np.flatnonzero(per_code > 0)
            ranked = sorted((corpus.contributor_names[c], float(per_code[c])) for c in used)
            names = [n for n, _ in ranked]
            cw = np.asarray([w for _, w in ranked])
            for name, amt in zip(names, split_amount(c_part, cw)):
                if amt:
                    credit[("contributor", name)] = int(amt)
            total_w = float(cw.sum())
            for name, x in zip(names, cw):
                add_evidence(name, mass * float(x) / total_w)
            if v_part > 0:
                vw: dict[str, float] = {}
                voted = idx[corpus.voted[idx]]
                for i, wi in zip(voted.tolist(), corpus.weight[voted].tolist()):
                    acc = accepting(i)
                    xs = [fee_weight(v) * sw for v, sw in acc]
                    tot = sum(xs)
                    if tot > 0:
                        for (v, _), x in zip(acc, xs):
                            if x > 0:
                                vw[v] = vw.get(v, 0.0) + wi * x / tot
                vnames = sorted(vw)
                if vnames:
                    for name, amt in zip(vnames, split_amount(v_part, np.asarray([vw[v] for v in vnames]))):
                        if amt:
                            credit[("validator", name)] = int(amt)
                else:
                    credit[("protocol", treasury)] = v_part
            for (role, account), amount in sorted(credit.items()):
                rows.append(_row(ref, epoch, account, role, amount, end, seq))
            if bal:
                rows.append(_row(ref, epoch, pool_account(dn), "pool", -bal, end, seq))
            del self.balance[dn]
            self.mass.pop(dn, None)
        return rows, sum(self.balance.values())


def _row(ref: str, epoch: int, account: str, role: str, amount: int, end: datetime, seq: int) -> dict:
    return {"entry_id": entry_id("pool", ref, role, account), "epoch": epoch, "account": account,
            "role": role, "source": "pool", "amount": int(amount), "ref_event_id": ref,
            "ts": end, "seq": seq}
