"""Where the sequence owner's core time goes: the handlers and the parts a keyed stage could move.

The scaled topology's ceiling is its one owner (bench/scaleout.py); keyed stages (datanet
span shards, a usage scatter-gather, the ledger by account; docs/scaled-topology.md) help
only as much as the work they take out of it. This replays the seeded scenario through
the core in memory (``processors.replay.process_all``: no Kafka, no store), timing each
handler and, inside them, the span queries (what datanet-keyed span shards would answer),
the attribution decision, the exact fee split and the ledger booking, with
``time.perf_counter`` wrappers (cProfile inflates the small Python calls several-fold).
Inner rows overlap the handler rows they belong to. Prints one table.
Usage: python bench/core_costs.py [--scale 2.0] [--seed 7]
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poa_stream.attribution import warmup  # noqa: E402
from poa_stream.attribution import spans as span_module  # noqa: E402
from poa_stream.processors import core as core_module  # noqa: E402
from poa_stream.processors import handlers_usage  # noqa: E402
from poa_stream.processors.replay import process_all  # noqa: E402
from poa_stream.scenario import generate  # noqa: E402
from poa_stream.settings import Settings  # noqa: E402

SPENT: dict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter = collections.Counter()


def timed(owner, name: str, label: str) -> None:
    inner = getattr(owner, name)

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            SPENT[label] += time.perf_counter() - t0
            CALLS[label] += 1
    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    warmup()
    lines = [(t, raw.encode()) for t, raw in generate(seed=args.seed, scale=args.scale).records]
    C = core_module.Core
    for name, label in [("process", "intake checks: decode, validate, dedup (process)"),
                        ("_contribution", "contribution handler"), ("_validation", "validation handler"),
                        ("_model", "model handler"), ("_usage", "usage handler"),
                        ("_attribute", "  usage: attribution decision"),
                        ("_book", "  ledger booking (all handlers)")]:
        timed(C, name, label)
    timed(handlers_usage, "fee_credits", "  usage: exact fee split")
    timed(span_module.SpanIndex, "find_spans", "  span queries (usages and uploads)")
    process_all(Settings(), lines[:500])  # compile and warm the caches
    SPENT.clear()
    CALLS.clear()
    t0 = time.perf_counter()
    process_all(Settings(), lines)
    total = time.perf_counter() - t0
    t = Table(title=f"core time by part: {len(lines):,} messages (seed {args.seed}, scale {args.scale}), "
                    f"{total:.2f} s, {total / len(lines) * 1e6:.0f} µs per message")
    for col in ("part", "calls", "seconds", "share", "µs per message"):
        t.add_column(col, justify="left" if col == "part" else "right")
    for label, s in sorted(SPENT.items(), key=lambda kv: -kv[1]):
        t.add_row(label, f"{CALLS[label]:,}", f"{s:.2f}", f"{s / total:.1%}", f"{s / len(lines) * 1e6:.0f}")
    rest = total - sum(v for k, v in SPENT.items() if not k.startswith("  ") and "process" not in k) - SPENT[
        "intake checks: decode, validate, dedup (process)"]
    t.add_row("release, ordering, epoch closes, the rest", "", f"{rest:.2f}", f"{rest / total:.1%}",
              f"{rest / len(lines) * 1e6:.0f}")
    Console().print(t)


if __name__ == "__main__":
    main()
