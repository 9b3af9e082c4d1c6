"""Scaling: how throughput, output volume, memory, snapshots and restart grow with the workload.

For each scale the seeded scenario (``poa.scenario``) is written to a temporary directory, then
each measurement runs in a fresh ``sys.executable`` subprocess (whole-process numbers, RSS per run;
one warm-up process first fills numba's cache, so no measured process compiles):
1. replay: ``processors.replay.replay_file`` onto a fresh embedded chdb store, events/s (lines over
   the replay's seconds; imports and numba warm-up timed apart); from the finished store the
   attribution rows and fee ledger rows per usage event, the attribution rows in all; the
   subprocess's peak RSS; then ``processors.snapshots.Snapshots.write(core)``: size and seconds
   ("n/a" while that module does not exist);
2. restart: ``replay_file`` of one new valid usage event onto that store (the core rebuilt from
   the store plus one event), seconds, imports and warm-up excluded; three runs, the median;
3. core alone: ``processors.replay.process_all`` over the same (topic, raw) pairs, no store, events/s.
Prints one table with Nx/1x ratios and the goals. Usage: python bench/scale.py [--scales 1,4,16] [--seed 13]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MiB = 1 << 20


def _settings(home: Path, store: Path):
    from poa_stream.settings import Settings
    return Settings(home=home, store_dir=store, store_engine="chdb")


def child(kind: str, events: Path, store: Path, home: Path) -> dict:
    """One measurement in this (fresh) process; returns what the parent prints."""
    t0 = time.perf_counter()
    from poa_stream.attribution import warmup
    from poa_stream.processors.replay import process_all, replay_file, topic_of
    from poa_stream.sinks import open_sink
    out: dict = {"import_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    warmup()
    out["warmup_s"] = time.perf_counter() - t0
    if kind == "warm":  # fills numba's cache, so that no measured process compiles
        return out
    settings = _settings(home, store)
    lines = [line for line in events.read_bytes().split(b"\n") if line.strip()]
    out["lines"] = len(lines)
    if kind == "core":
        pairs = [(topic_of(line), line) for line in lines]
        t0 = time.perf_counter()
        core, _ = process_all(settings, pairs)
        out["seconds"] = time.perf_counter() - t0
        out["events_per_s"] = len(pairs) / out["seconds"]
        out["seq"] = core.seq
        return out
    sink = open_sink(settings)
    try:
        t0 = time.perf_counter()
        core = replay_file(events, settings, sink)
        out["seconds"] = time.perf_counter() - t0
        out["new_events"] = core.seq - core.restored_seq
        out["seq"] = core.seq
        if kind == "restart":
            if out["new_events"] != 1:
                raise SystemExit(f"restart replay logged {out['new_events']} new events, expected exactly 1")
            return out
        out["events_per_s"] = len(lines) / out["seconds"]
        out["peak_rss_after_replay_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MiB
        db = sink.database
        n_usage = int(sink.scalar(f"SELECT count() FROM {db}.usage"))
        n_attr = int(sink.scalar(f"SELECT count() FROM {db}.attributions"))
        n_fee = int(sink.scalar(f"SELECT count() FROM {db}.reward_ledger WHERE source = 'fee'"))
        out.update(usage=n_usage, attributions=n_attr, fee_ledger=n_fee,
                   attr_per_usage=n_attr / max(1, n_usage), ledger_per_usage=n_fee / max(1, n_usage))
        try:
            from poa_stream.processors.snapshots import Snapshots
        except ImportError as exc:
            out["snapshot"] = f"n/a ({exc})"
        else:
            info = Snapshots.for_settings(settings).write(core)
            out["snapshot"] = {"path": str(info.path), "nbytes": int(info.nbytes),
                               "seconds": float(info.seconds), "seq": info.seq}
    finally:
        sink.close()
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MiB
    return out


def run_child(kind: str, events: Path, store: Path, home: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
           "--events", str(events), "--store", str(store), "--home", str(home)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"{kind} child failed (rc {p.returncode}):\n{p.stderr[-4000:]}{p.stdout[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def restart_event(records: list[tuple[str, str]], tag: str, offset_s: int = 1) -> str:
    """A new valid usage event: the scenario's last valid usage with a new request_id, its
    derived event_id, and ts = the latest valid event time + 1 s, as compact sorted-key JSON."""
    from poa_stream.emit import usage_event_id
    from poa_stream.streams.events import EventError, decode_event
    last_usage, max_ts = None, None
    for _, raw in records:
        try:
            ev = decode_event(raw)
        except EventError:
            continue
        max_ts = ev.ts if max_ts is None else max(max_ts, ev.ts)
        if json.loads(raw).get("type") == "usage":
            last_usage = raw
    d = json.loads(last_usage)
    d["request_id"] = f"bench-scale-restart-{tag}"
    d["event_id"] = usage_event_id(d["model_id"], d["request_id"])
    d["ts"] = (max_ts + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    line = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    decode_event(line)  # fail here, not in the child, if it is not valid
    return line


def measure(scale: float, seed: int) -> dict:
    from poa_stream.scenario import generate, write
    with tempfile.TemporaryDirectory(prefix="poa-bench-scale-") as tmp:
        work = Path(tmp)
        sc = generate(seed=seed, scale=scale)
        events, _ = write(sc, work / "scenario")
        store, home = work / "store", work / "home"
        r = {"scale": scale, "lines": len(sc.records)}
        r["replay"] = run_child("replay", events, store, home)
        runs = []  # three restarts, each one new event: the median (one sample is noisy here)
        for i in range(3):
            one = work / f"one-{i}.jsonl"
            one.write_text(restart_event(sc.records, f"{seed}-{scale:g}-{i}", offset_s=1 + i) + "\n",
                           encoding="utf-8")
            runs.append(run_child("restart", one, store, home))
        r["restart"] = sorted(runs, key=lambda x: x["seconds"])[1]
        r["core"] = run_child("core", events, work / "core-store-unused", home)
        return r


METRICS = [  # label, getter, format
    ("events/s, whole process replay", lambda r: r["replay"]["events_per_s"], "{:,.0f}"),
    ("events/s, core alone", lambda r: r["core"]["events_per_s"], "{:,.0f}"),
    ("attribution rows per usage", lambda r: r["replay"]["attr_per_usage"], "{:.2f}"),
    ("fee ledger rows per usage", lambda r: r["replay"]["ledger_per_usage"], "{:.2f}"),
    ("attribution rows, total", lambda r: r["replay"]["attributions"], "{:,}"),
    ("peak RSS MiB (replay process)", lambda r: r["replay"]["peak_rss_mib"], "{:,.0f}"),
    ("snapshot MiB", lambda r: r["replay"]["snapshot"]["nbytes"] / MiB, "{:,.2f}"),
    ("snapshot write s", lambda r: r["replay"]["snapshot"]["seconds"], "{:.3f}"),
    ("restart s (rebuild + 1 event)", lambda r: r["restart"]["seconds"], "{:.2f}"),
]


def value(get, r):
    try:
        return get(r)
    except (KeyError, TypeError):  # snapshot "n/a"
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="1,4,16", help="comma-separated scenario scales")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    ap.add_argument("--child", choices=("warm", "replay", "restart", "core"), help=argparse.SUPPRESS)
    ap.add_argument("--events", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.events, args.store, args.home)), flush=True)
        return

    from rich.console import Console
    from rich.table import Table
    console = Console()
    scales = [float(s) for s in args.scales.split(",") if s.strip()]
    with console.status("numba warm-up (compiles once into numba's cache)"):
        warm0 = run_child("warm", Path(os.devnull), Path(os.devnull), Path(os.devnull))["warmup_s"]
    results = []
    for s in scales:
        with console.status(f"scale {s:g}: generating, replaying, restarting, core alone"):
            results.append(measure(s, args.seed))
    base = results[0]
    t = Table(title=f"scaling (seed {args.seed}), {os.cpu_count()} cores; fresh process per measurement")
    t.add_column("metric")
    for r in results:
        t.add_column(f"{r['scale']:g}x ({r['lines']:,} lines)", justify="right")
        if r is not base:
            t.add_column(f"{r['scale']:g}x/{base['scale']:g}x", justify="right")
    for label, get, fmt in METRICS:
        b, row = value(get, base), [label]
        for r in results:
            v = value(get, r)
            row.append("n/a" if v is None else fmt.format(v))
            if r is not base:
                row.append("n/a" if v is None or not b else f"{v / b:.2f}")
        t.add_row(*row)
    console.print(t)
    snap = base["replay"]["snapshot"]
    if isinstance(snap, str):
        console.print(f"snapshot: {snap}")
    top = results[-1]
    ratio = lambda get: (value(get, top) or 0) / (value(get, base) or float("nan"))  # noqa: E731
    m = {label: get for label, get, _ in METRICS}
    goals = [
        ("events/s at 16x >= 0.8 of 1x", ratio(m["events/s, whole process replay"]) >= 0.8),
        ("rows per usage flat (within 1.2x)",
         all(1 / 1.2 <= ratio(m[k]) <= 1.2 for k in ("attribution rows per usage", "fee ledger rows per usage"))),
        ("restart at 16x <= 1.5x of 1x and under 5 s",
         ratio(m["restart s (rebuild + 1 event)"]) <= 1.5 and top["restart"]["seconds"] < 5),
        ("core alone >= 5,000 events/s at 16x", top["core"]["events_per_s"] >= 5000),
    ]
    console.print(f"goals (checked at {top['scale']:g}x against {base['scale']:g}x):")
    for text, ok in goals:
        console.print(f"  {text}: {'met' if ok else 'NOT met'}")
    console.print(f"excluded from the timings: first warm-up {warm0:.1f}s; imports + warm-up per process: " + ", ".join(
        f"{r['scale']:g}x replay {r['replay']['import_s'] + r['replay']['warmup_s']:.1f}s, "
        f"restart {r['restart']['import_s'] + r['restart']['warmup_s']:.1f}s" for r in results))
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "cpus": os.cpu_count(), "first_warmup_s": warm0,
                                         "results": results}, indent=1))
        console.print(f"raw numbers: {args.json}")


if __name__ == "__main__":
    main()
