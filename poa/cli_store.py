"""``poa store info|snapshot``: what a store holds and its core snapshots.

Registered by poa/cli.py: ``app.add_typer(store_app, name="store")``.
"""
from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

store_app = typer.Typer(invoke_without_command=True,
                        help="The store every command uses (and why), its log, its snapshots.")
console = Console()
err = Console(stderr=True, soft_wrap=True)
STORE_OPT = typer.Option(None, "--store", help="embedded store (default: settings)")


@store_app.callback()
def which(ctx: typer.Context, store: Path | None = STORE_OPT) -> None:
    """Print the store the commands use, and why (the rule of poa/stores.py)."""
    if ctx.invoked_subcommand is not None:
        return
    from poa_stream.settings import get_settings
    from poa_stream.stores import resolve
    r = resolve(get_settings(), store, reading=True)
    w = resolve(get_settings(), store, reading=False)
    console.print(f"{r.where}  ({r.why}{'' if r.exists else '; does not exist yet'})", soft_wrap=True)
    if r.served:
        console.print(f"readers query it through {r.served}", soft_wrap=True)
    if w.where != r.where:
        console.print(f"writers (worker, replay, policy apply) use {w.where}  ({w.why})", soft_wrap=True)


@store_app.command("info")
def info(store: Path | None = STORE_OPT) -> None:
    """The store's log and ledger sizes, and its snapshots (age, size, seq, usable or not)."""
    from poa_stream.cli import _open_reader, _settings
    from poa_stream.processors.snapshots import Snapshots
    s = _settings(store, reading=True)
    sink = _open_reader(store)
    try:
        db = sink.database
        last = sink.last_seq()
        console.print(f"store: {s.store_path if s.store_engine == 'chdb' else s.clickhouse_url} "
                      f"(database {db}): {last:,} logged events, "
                      f"{int(sink.scalar(f'SELECT count() FROM {db}.reward_ledger') or 0):,} ledger rows, "
                      f"{int(sink.scalar(f'SELECT count() FROM {db}.epochs') or 0):,} closed epochs")
        snaps = Snapshots.for_settings(s)
        listed = snaps.list() if snaps.dir.exists() else []
        console.print(f"snapshots: {snaps.dir} (one every {s.snapshot_every_events:,} events and at "
                      f"each epoch close; keeping {s.snapshot_keep})")
        if not listed:
            console.print("  none: a restart replays the whole log")
            return
        t = Table("file", "seq", "events after it", "age", "MiB", "in this store's log")
        now = time.time()
        for x in listed:
            mine = x.seq <= last and sink.logged_key(x.seq) == x.event_id
            t.add_row(x.path.name, f"{x.seq:,}", f"{max(0, last - x.seq):,}",
                      _age(now - x.created_unix), f"{x.nbytes / 2**20:.1f}", "yes" if mine else "[red]no[/]")
        console.print(t)
    finally:
        sink.close()


@store_app.command("snapshot")
def snapshot(store: Path | None = STORE_OPT) -> None:
    """Write a snapshot now (takes the store's writer lease: not while a worker runs)."""
    from poa_stream.cli import _settings
    from poa_stream.processors.replay import replay_into
    s = _settings(store)
    if s.snapshot_every_events <= 0:
        s = s.model_copy(update={"snapshot_every_events": 1})
    from poa_stream.sinks import open_sink
    sink = open_sink(s)
    try:
        core = replay_into(iter(()), s, sink, snapshot_at_end=True)
    except Exception as exc:
        err.print(f"[red]poa store snapshot:[/] {exc}")
        raise typer.Exit(1)
    finally:
        sink.close()
    console.print(f"snapshot of seq {core.seq:,} written to {s.snapshot_path}")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
