"""Suspected wash usage: per epoch and operator, ``flags`` rows with their reasons.

Watch points, not verdicts: a flag moves no money (under the default emission rule usage
cannot pay anyway, README "Economics"); it tells ops and analysts where usage looks
incentive-driven rather than real demand. Observed per usage event (O(credited
contributors) each), evaluated once per operator at epoch close. Reasons (policy fields):

- ``wash_self_dealing``: at least ``wash_linked_min_share`` of the contributor weight of
  the operator's usage in the epoch credits accounts *linked* to the operator: the
  operator's own account, or an account registered with the same signing key (policy
  ``keys``). Score: that share.
- ``wash_low_fee_burst``: the operator reported at least ``wash_burst_events`` usage events
  with fee <= ``wash_low_fee_micro`` inside one window of ``wash_burst_window_s`` seconds
  (windows aligned to the epoch start). Score: the low-fee share of its usage events.
- ``wash_closed_loop``: at least ``wash_loop_share`` of the operator's contributor weight
  credits accounts it *owns*, at most ``wash_loop_max_accounts`` of them. A contributor is
  owned in a datanet when (a) it gets at least ``wash_loop_owned_share`` of the usage
  credit it receives there in the epoch from this operator, and (b) the other operators'
  usage does draw on that datanet but gives the contributor less than
  ``wash_loop_others_ratio`` times an even share of it (their datanet credit / the
  contributors they credit there): nobody else's users quote it. A datanet only this
  operator's usage draws on gives no comparison (a specialised model is not a loop).
  Score: the owned share. Known false positive: a contributor whose text only one
  operator's users ask about, in a datanet other operators use for other texts.

Every reason needs at least ``wash_min_events`` usage events of the operator in the epoch.
Rows: ``contribution_id`` = ``operator:<account>``, ``contributor`` = the operator,
``ts`` = the epoch's last millisecond, ``detail`` names the epoch, the counts and the
accounts. Deterministic: a function of the epoch's usage events in processing order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

OPERATOR_PREFIX = "operator:"


@dataclass
class _OperatorEpoch:
    events: int = 0
    fees_micro: int = 0
    low_fee: int = 0
    low_fee_windows: dict[int, int] = field(default_factory=dict)  # window index -> low-fee events
    credited: dict[str, float] = field(default_factory=dict)  # contributor -> attribution weight
    by_datanet: dict[tuple[str, str], float] = field(default_factory=dict)  # (contributor, datanet)


class WashWatch:
    """Per booking epoch, per operator: what its usage paid and whom it credited."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, _OperatorEpoch]] = {}

    def observe(self, epoch: int, operator: str, fee_micro: int, ts_s: float, epoch_start_s: float,
                contributors: list[str], weights: list[float], datanets: list[str],
                low_fee_micro: int, window_s: float) -> None:
        """One usage event booked into ``epoch`` (``ts_s``, ``epoch_start_s``: Unix seconds)."""
        op = self.epochs.setdefault(epoch, {}).setdefault(operator, _OperatorEpoch())
        op.events += 1
        op.fees_micro += fee_micro
        if fee_micro <= low_fee_micro:
            op.low_fee += 1
            w = int(max(0.0, ts_s - epoch_start_s) // window_s)
            op.low_fee_windows[w] = op.low_fee_windows.get(w, 0) + 1
        for c, x, dn in zip(contributors, weights, datanets):
            if x > 0:
                op.credited[c] = op.credited.get(c, 0.0) + x
                op.by_datanet[(c, dn)] = op.by_datanet.get((c, dn), 0.0) + x

    def close(self, epoch: int, P, end: datetime, event_id: str, seq: int) -> list[dict]:
        """The flags rows of ``epoch`` under policy ``P`` (its state is dropped)."""
        ops = self.epochs.pop(epoch, {})
        keys = P.keys
        received: dict[tuple[str, str], float] = {}  # (contributor, datanet) -> by every operator
        in_datanet: dict[str, list[str]] = {}  # datanet -> its credited contributors
        dn_total: dict[str, float] = {}  # datanet -> weight credited by every operator
        for op in ops.values():
            for (c, dn), x in op.by_datanet.items():
                if (c, dn) not in received:
                    in_datanet.setdefault(dn, []).append(c)
                received[(c, dn)] = received.get((c, dn), 0.0) + x
                dn_total[dn] = dn_total.get(dn, 0.0) + x

        others_in: dict[tuple[int, str], tuple[float, int]] = {}

        def others_of(op: _OperatorEpoch, dn: str) -> tuple[float, int]:
            """(weight the other operators credit in ``dn``, contributors they credit there),
            once per (operator, datanet)."""
            key = (id(op), dn)
            if key not in others_in:
                mine = {c2: op.by_datanet.get((c2, dn), 0.0) for c2 in in_datanet[dn]}
                others_in[key] = (dn_total[dn] - sum(mine.values()),
                                  sum(1 for c2 in in_datanet[dn] if received[(c2, dn)] - mine[c2] > 1e-12))
            return others_in[key]

        def owned(op: _OperatorEpoch, c: str, dn: str, x: float) -> bool:
            """Does ``op`` own contributor ``c`` in datanet ``dn`` (module doc)?"""
            if x < P.wash_loop_owned_share * received[(c, dn)]:
                return False
            others_total, n_others = others_of(op, dn)
            if others_total <= 1e-12 * dn_total[dn]:
                return False  # only this operator draws on the datanet: nothing to compare
            return received[(c, dn)] - x < P.wash_loop_others_ratio * others_total / n_others
        crediting = [name for name, op in ops.items() if op.credited]
        rows = []

        def flag(name: str, reason: str, score: float, detail: str) -> None:
            rows.append({"contribution_id": OPERATOR_PREFIX + name, "contributor": name,
                         "reason": reason, "score": round(float(score), 6),
                         "detail": f"epoch {epoch}: {detail}", "ts": end, "event_id": event_id,
                         "seq": seq})

        for name in sorted(ops):
            op = ops[name]
            if op.events < P.wash_min_events:
                continue
            total = sum(op.credited.values())
            if total > 0:
                key = keys.get(name)
                linked = sorted(c for c in op.credited
                                if c == name or (key is not None and keys.get(c) == key))
                share = sum(op.credited[c] for c in linked) / total
                if linked and share >= P.wash_linked_min_share:
                    how = ", ".join(("same account" if c == name else "same signing key") + f" {c}"
                                    for c in linked[:5])
                    flag(name, "wash_self_dealing", share,
                         f"{share:.0%} of the contributor weight of {op.events} usage events "
                         f"credits linked accounts ({how})")
            peak = max(op.low_fee_windows.values(), default=0)
            if peak >= P.wash_burst_events:
                flag(name, "wash_low_fee_burst", op.low_fee / op.events,
                     f"{peak} usage events with fee <= {P.wash_low_fee_micro} micro-units within "
                     f"{P.wash_burst_window_s:g} s; {op.low_fee} of {op.events} events low-fee, "
                     f"fees {op.fees_micro} micro-units")
            others = [o for o in crediting if o != name]
            if total > 0 and others:
                pairs = [(c, dn) for (c, dn), x in op.by_datanet.items() if owned(op, c, dn, x)]
                loop = sorted({c for c, _ in pairs})
                share = sum(op.by_datanet[p] for p in pairs) / total
                if loop and share >= P.wash_loop_share and len(loop) <= P.wash_loop_max_accounts:
                    flag(name, "wash_closed_loop", share,
                         f"{share:.0%} of the contributor weight of {op.events} usage events "
                         f"credits {', '.join(loop[:5])}, who get at least "
                         f"{P.wash_loop_owned_share:.0%} of their usage credit from this operator, "
                         f"while the other operators' usage of the same datanets barely credits them; "
                         f"fees {op.fees_micro} micro-units")
        return rows
