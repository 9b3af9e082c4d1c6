"""``poa audit``: the stored ledger against the input log, recomputed independently.

The scaled topology's promise is that the ledger is a function of the input log alone
(processors/merge.py). This reads every input partition back from Kafka, records and tick
records from the beginning (processors/scaled.py ``read_input_log``), replays them through
the offline merge (processors/replay.py ``replay_merged``) and compares with the store up
to the store's last logged event: a live worker may be behind the log, and the prefix it
wrote must be the recomputed one.

Compared: the ``events`` log seq by seq (seq, event id, status); the ledger entries
logged up to that seq (entry id, epoch, account, role, source, amount); the epochs closed
up to it (epoch, Merkle root). The first difference of each is reported.

An input partition added while the group runs joins the merge at its join marker
(processors/merge.py); until the marker is in the log, its messages are held untimed and
nothing after them is released. The offline merge of such a log would take the partition
as a member from the start, so it is left out of the recomputation (and counted in
:attr:`AuditResult.joining`) while the store's merge state does not know it as a member and
its log holds no marker: what the store processed so far cannot depend on it. Only a store
written by the scaled topology is expected to match (a single-topology worker releases a
caught-up partition's events in arrival order; README "Several workers").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from poa_stream.settings import Settings


@dataclass
class AuditResult:
    """Counts compared and the differences found (empty: the store is the recomputation)."""
    upto_seq: int = 0
    events: int = 0
    entries: int = 0
    roots: int = 0
    joining: list = field(default_factory=list)  # partitions left out: joining, marker not yet in the log
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def _first_difference(what: str, stored: list[tuple], want: list[tuple]) -> list[str]:
    if stored == want:
        return []
    i = next((k for k, (a, b) in enumerate(zip(stored, want)) if a != b), min(len(stored), len(want)))
    got = stored[i] if i < len(stored) else "nothing"
    exp = want[i] if i < len(want) else "nothing"
    return [f"{what}: {len(stored):,} stored, {len(want):,} recomputed; the first difference at "
            f"#{i}: stored {got}, recomputed {exp}"]


def audit(settings: Settings, sink, per_source=None) -> AuditResult:
    """Compare ``sink`` with the offline merge of ``per_source`` (default: the input topics
    of ``settings``' Kafka, read back in full)."""
    from poa_stream.processors.replay import replay_merged
    from poa_stream.processors.scaled import read_input_log
    from poa_stream.processors.merge import PENDING_US
    if per_source is None:
        per_source = read_input_log(settings.kafka())
    frontier, _ = sink.load_merge()
    members = {(t, int(p)) for t, p, _, order_us in frontier if int(order_us) != PENDING_US}
    joining = sorted(src for src, envs in per_source.items()
                     if members and src not in members and not any(e.join and e.tick is not None for e in envs))
    _, res = replay_merged(settings, {src: envs for src, envs in per_source.items() if src not in joining})
    db = sink.database
    n = int(sink.scalar(f"SELECT max(seq) FROM {db}.events") or 0)
    _, ev = sink.query(f"SELECT seq, event_id, status FROM {db}.events ORDER BY seq")
    _, led = sink.query(f"SELECT entry_id, epoch, account, role, source, toString(amount) "
                        f"FROM {db}.reward_ledger WHERE seq <= {n} ORDER BY entry_id, account")
    _, roots = sink.query(f"SELECT epoch, merkle_root FROM {db}.epochs WHERE seq <= {n} ORDER BY epoch")
    want_ev = [(r["seq"], r["event_id"], r["status"]) for r in res.rows.get("events", []) if r["seq"] <= n]
    want_led = sorted((r["entry_id"], r["epoch"], r["account"], r["role"], r["source"], str(r["amount"]))
                      for r in res.rows.get("reward_ledger", []) if r["seq"] <= n)
    want_roots = sorted((r["epoch"], r["merkle_root"]) for r in res.rows.get("epochs", []) if r["seq"] <= n)
    out = AuditResult(n, len(want_ev), len(want_led), len(want_roots), joining)
    out.differences += _first_difference("events", [tuple(r) for r in ev], want_ev)
    out.differences += _first_difference("reward_ledger", [tuple(r) for r in led], want_led)
    out.differences += _first_difference("epochs (Merkle roots)", [tuple(r) for r in roots], want_roots)
    return out


def print_result(r: AuditResult, console: Console) -> None:
    if r.ok:
        console.print(f"[green]the ledger is a function of the input log:[/] {r.events:,} events, "
                      f"{r.entries:,} ledger entries and {r.roots} epoch roots equal the offline merge "
                      f"of the input topics (up to seq {r.upto_seq:,})")
        if r.joining:
            console.print(f"  left out, joining the merge (their join marker is not in the log yet): "
                          f"{', '.join(f'{t}[{p}]' for t, p in r.joining)}", soft_wrap=True)
        return
    console.print("[red]the store differs from the offline merge of the input log[/]")
    for d in r.differences:
        console.print(f"  {d}", soft_wrap=True)


def run_audit(settings: Settings, store: Path | None, console: Console, err: Console) -> int:
    """``poa audit``: 0 equal, 1 different or a service failed (one line)."""
    from poa_stream.stores import StoreError, open_store, resolve
    try:
        sink = open_store(resolve(settings, store, reading=True), reading=True)
    except StoreError as exc:
        err.print(f"[red]poa audit:[/] {exc}")
        return 1
    try:
        with console.status("reading the input topics back and replaying them through the merge"):
            r = audit(settings, sink)
    except Exception as exc:
        err.print(f"[red]poa audit:[/] {type(exc).__name__}: {exc}")
        return 1
    finally:
        sink.close()
    t = Table(title="poa audit: the store against the input log")
    t.add_column("compared")
    t.add_column("recomputed", justify="right")
    t.add_row("events (seq, id, status)", f"{r.events:,}")
    t.add_row("ledger entries", f"{r.entries:,}")
    t.add_row("epoch roots", f"{r.roots}")
    console.print(t)
    print_result(r, console)
    return 0 if r.ok else 1
