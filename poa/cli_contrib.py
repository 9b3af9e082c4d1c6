"""``poa epochs`` and ``poa explain``: what contributors ask of the ledger.

Registered by poa/cli.py. Amounts are integer micro-units in the store; people read
tokens with all six decimals (:func:`tokens`: exact, integer arithmetic, never a float).
"""
from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True, soft_wrap=True)
MICRO = 1_000_000


def tokens(micro: int) -> str:
    """``1234567`` -> ``"1.234567"`` (exact; negative amounts keep their sign)."""
    micro = int(micro)
    sign, m = ("-" if micro < 0 else ""), abs(micro)
    return f"{sign}{m // MICRO:,}.{m % MICRO:06d}"


def _day(ts) -> str:
    return ts.strftime("%Y-%m-%d %H:%M") if isinstance(ts, datetime) else str(ts)


def epochs(store: Optional[Path] = typer.Option(None, "--store", help="embedded store (default: `poa store`)",
                                                show_default=False),
           as_json: bool = typer.Option(False, "--json", help="one JSON object per epoch (amounts in micro-units)")) -> None:
    """The closed epochs: number, dates (UTC), emission budget, what fees and emissions paid
    (tokens), entries and Merkle root."""
    from poa_stream.cli import _open_reader
    sink = _open_reader(store)
    try:
        cols, rows = sink.query(
            f"SELECT epoch, start, `end`, budget, fee_rewards, emission_rewards, pool_settled, entries, merkle_root "
            f"FROM {sink.database}.epochs ORDER BY epoch")
    finally:
        sink.close()
    recs = [dict(zip(cols, r)) for r in rows]
    if as_json:
        for r in recs:
            sys.stdout.write(json.dumps({**r, "start": str(r["start"]), "end": str(r["end"])}, default=str) + "\n")
        return
    if not recs:
        err.print("no closed epoch yet (an epoch closes once events of a later one arrive)")
        raise typer.Exit(0)
    if not sys.stdout.isatty():
        for r in recs:
            sys.stdout.write("\t".join([str(r["epoch"]), _day(r["start"]), _day(r["end"]), tokens(r["budget"]),
                                        tokens(r["fee_rewards"]), tokens(r["emission_rewards"]),
                                        str(r["entries"]), r["merkle_root"]]) + "\n")
        return
    t = Table("epoch", "from (UTC)", "to (UTC)", "budget", "fees paid", "emission paid", "entries", "root",
              title="closed epochs (amounts in tokens)")
    for r in recs:
        t.add_row(str(r["epoch"]), _day(r["start"]), _day(r["end"]), tokens(r["budget"]), tokens(r["fee_rewards"]),
                  tokens(r["emission_rewards"]), f"{r['entries']:,}", r["merkle_root"][:16] + "…")
    console.print(t)


def explain(account: str = typer.Option(..., "--account", help="the account whose credits to explain"),
            epoch: int = typer.Option(..., "--epoch", help="the epoch (see `poa epochs`)"),
            store: Optional[Path] = typer.Option(None, "--store", help="embedded store (default: `poa store`)",
                                                 show_default=False),
            as_json: bool = typer.Option(False, "--json", help="one JSON object per credit")) -> None:
    """Why each credit of an account in an epoch was paid: its source, the usage event
    behind a fee credit (model, request, fee, matched tokens) and the account's contributions
    that usage was attributed to (weight and evidence: span, influence, lineage, pool)."""
    from poa_stream.cli import _open_reader
    sink = _open_reader(store)
    db = sink.database
    a = account.replace("\\", "\\\\").replace("'", "\\'")
    try:
        cols, rows = sink.query(
            f"SELECT l.entry_id, l.role, l.source, l.amount, l.ref_event_id, l.ts, u.model_id, u.request_id, u.fee, "
            f"u.output_tokens, u.matched_tokens FROM {db}.reward_ledger AS l LEFT JOIN {db}.usage AS u "
            f"ON u.event_id = l.ref_event_id WHERE l.account = '{a}' AND l.epoch = {int(epoch)} ORDER BY l.ts, l.entry_id")
        credits = [dict(zip(cols, r)) for r in rows]
        acols, arows = sink.query(
            f"SELECT event_id, contribution_id, datanet, via_model, weight, evidence FROM {db}.attributions "
            f"WHERE contributor = '{a}' AND event_id IN (SELECT ref_event_id FROM {db}.reward_ledger "
            f"WHERE account = '{a}' AND epoch = {int(epoch)}) ORDER BY event_id, weight DESC, contribution_id")
    finally:
        sink.close()
    why: dict[str, list[dict]] = {}
    for r in arows:
        d = dict(zip(acols, r))
        why.setdefault(d.pop("event_id"), []).append(d)
    if not credits:
        err.print(f"{account} has no credits in epoch {epoch}")
        raise typer.Exit(1)
    total = 0
    for c in credits:
        total += c["amount"]
        basis = why.get(c["ref_event_id"], [])
        if as_json:
            sys.stdout.write(json.dumps({**c, "ts": str(c["ts"]), "attributed": basis}, default=str) + "\n")
            continue
        line = (f"{_day(c['ts'])}  {c['source']:<8} {c['role']:<11} {tokens(c['amount']):>16}  "
                f"{c['ref_event_id']}")
        if c["source"] == "fee" and c["model_id"]:
            line += (f"  usage of model {c['model_id']} (request {c['request_id']}, fee {tokens(c['fee'])}, "
                     f"{c['matched_tokens']}/{c['output_tokens']} output tokens matched)")
        sys.stdout.write(line + "\n")
        for b in basis:
            via = f" via {b['via_model']}" if b["via_model"] else ""
            sys.stdout.write(f"    {b['contribution_id']} in {b['datanet']}{via}: weight {b['weight']:.4f} "
                             f"({b['evidence']})\n")
    if not as_json:
        sys.stdout.write(f"total for {account} in epoch {epoch}: {tokens(total)} tokens ({total:,} micro-units)\n")
