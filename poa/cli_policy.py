"""``poa policy show|apply``: the store's ledger policy log and explicit policy changes.

Registered by poa/cli.py: ``app.add_typer(policy_app, name="policy")``.
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

policy_app = typer.Typer(no_args_is_help=True, help="The ledger policy: show it, change it at an epoch.")
console = Console()
err = Console(stderr=True, soft_wrap=True)


def _open(store: Path | None):
    from poa_stream.cli import _settings
    from poa_stream.sinks import open_sink
    s = _settings(store)
    sink = open_sink(s)
    sink.ensure_schema()
    return s, sink


@policy_app.command("show")
def show(store: Path | None = typer.Option(None, "--store", help="embedded store (default: settings)")) -> None:
    """The store's policy versions, and how the configured policy differs from the latest."""
    from poa_stream.sinks import policy_log
    s, sink = _open(store)
    try:
        log = policy_log.load(sink)
        configured = s.policy()
        if not log:
            console.print(f"no policy recorded yet; configured: {configured.fingerprint()}")
            return
        for version, epoch, p in log:
            console.print(f"version {version}: from epoch {epoch}, fingerprint {p.fingerprint()}")
        diffs = log[-1][2].diff(configured)
        if diffs:
            console.print(f"configured policy {configured.fingerprint()} differs from the latest:")
            for d in diffs:
                console.print(f"  {d}")
        else:
            console.print("configured policy = the latest")
    finally:
        sink.close()


@policy_app.command("apply")
def apply(effective_epoch: int | None = typer.Option(
              None, "--effective-epoch", help="first epoch under the new policy (default: the "
              "epoch after the latest processed event)"),
          note: str = typer.Option("", "--note", help="why (stored with the change)"),
          store: Path | None = typer.Option(None, "--store", help="embedded store (default: settings)")) -> None:
    """Record the configured policy as the store's next one, from an epoch boundary on.

    Run it while no worker writes the store (it takes the writer lease); then start the
    worker with the same configuration."""
    from poa_stream.sinks import policy_log
    from poa_stream.sinks.lease import Lease, StoreLocked
    s, sink = _open(store)
    try:
        lease = Lease(sink, ttl_s=s.store_lease_ttl_s)
        try:
            lease.acquire()
        except StoreLocked as exc:
            err.print(f"[red]poa policy apply:[/] {exc}")
            raise typer.Exit(2)
        try:
            version, epoch, changes = policy_log.apply(sink, s.policy(), effective_epoch, note)
        except ValueError as exc:
            err.print(f"[red]poa policy apply:[/] {exc}")
            raise typer.Exit(2)
        finally:
            lease.release()
        console.print(f"policy version {version} recorded, in force from epoch {epoch}:")
        for c in changes:
            console.print(f"  {c}")
    finally:
        sink.close()
