"""Scale-out: the scaled topology (processors/scaled.py) with 1, 2 and 3 worker processes.

One local broker (its own ports), one ClickHouse HTTP endpoint (our chdb-backed server, in
this process), the seeded scenario. For each worker count: fresh topics and group, the
workers started and assigned their partitions, then the workload produced; measured from
the first produced message until the store has logged every event:
- events/s (raw), and raw efficiency X(n) / (n X(1));
- CPU seconds of each worker process (/proc utime+stime over the run), of the store (this
  process) and of the broker (its JVM), and the CPU-normalised efficiency
  CPU(1) / CPU(n) (the work per CPU-second against one worker: what distribution costs);
- Kafka messages per input event: the input messages, the sequence records intake packs
  them into (several envelopes per record) and the ticks.
Then the per-stage costs, measured in this process on the same workload: intake (decode
and envelope) and sequence (merge + core, no store) per event, and a model of the
throughput with n workers, one core each: the sequence is one owner, so
X(n) = 1 / (c_sequence + c_store + c_intake / n); printed for 1, 2, 3, 8 and 32 workers.
Usage: python bench/scaleout.py [--scale 2.0] [--seed 7] [--workers 1,2,3]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poa_stream.kafka_local import LocalKafka, reset_topics  # noqa: E402
from poa_stream.scenario import generate  # noqa: E402
from poa_stream.settings import Settings  # noqa: E402
from poa_stream.streams.producer import produce_records  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def broker_pid(work: Path) -> int | None:
    out = subprocess.run(["pgrep", "-f", f"{work}.*kafka.Kafka"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def produce_paced(bootstrap: str, records, eps: float) -> None:
    """Produce at about ``eps`` messages per second (a live flow below capacity)."""
    from poa_stream.streams.producer import EventProducer, raw_key
    t0 = time.perf_counter()
    with EventProducer(bootstrap) as producer:
        for i, (topic, raw) in enumerate(records):
            producer.send_raw(topic, raw, key=raw_key(raw))
            if i % 10 == 9:
                producer.flush()
                ahead = t0 + (i + 1) / eps - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)


def run(n: int, bootstrap: str, http_port: int, records, work: Path, sink_path: Path,
        pace_eps: float | None = None, tick_after_s: float = 2.0) -> dict:
    from poa_stream.sinks.chdb_sink import ChdbSink
    reset_topics(bootstrap, 3)
    tag = uuid.uuid4().hex[:8]
    db = f"bench_{n}_{tag}"
    sink = ChdbSink(sink_path, db)
    sink.ensure_schema()
    procs, statuses = [], []
    for i in range(n):
        home = work / f"w{n}-{i}"
        home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, POA_KAFKA_BOOTSTRAP=bootstrap, POA_STORE_ENGINE="http", POA_HOME=str(home),
                   POA_CLICKHOUSE_URL=f"http://127.0.0.1:{http_port}", POA_CLICKHOUSE_DATABASE=db,
                   POA_WORKER_TOPOLOGY="scaled", POA_WORKER_ID=f"poa-bench-{tag}", POA_WORKER_INSTANCE_ID=f"w{i}",
                   POA_MERGE_TICK_AFTER_S=str(tick_after_s), POA_METRICS_PORT="0", POA_WORKER_STATUS_FILE=str(home / "status.json"))
        statuses.append(home / "status.json")
        procs.append(subprocess.Popen([sys.executable, "-m", "poa_stream.cli", "worker"], env=env,
                                      stdout=open(home / "worker.log", "wb"), stderr=subprocess.STDOUT))
    import json

    def assigned() -> int:
        total = 0
        for p in statuses:
            try:
                total += len([tp for tp in json.loads(p.read_text()).get("assigned", ()) if "__assignor" not in tp])
            except (OSError, ValueError):
                return -1
        return total
    deadline = time.monotonic() + 300
    while assigned() != 11:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit(f"workers did not start; see {work}")
        time.sleep(0.3)
    time.sleep(1.0)
    bpid = broker_pid(work)
    cpu0 = [proc_cpu_s(p.pid) for p in procs]
    b0, s0 = proc_cpu_s(bpid) if bpid else 0.0, self_cpu_s()
    t0 = time.perf_counter()
    if pace_eps:
        produce_paced(bootstrap, records, pace_eps)
    else:
        produce_records(bootstrap, records)
    n_events = None
    while True:
        got = int(sink.scalar(f"SELECT count() FROM {db}.events") or 0)
        held = int(sink.scalar(f"SELECT count() FROM {db}.merge_log WHERE done = 0 AND (src_topic, src_partition, "
                               f"src_offset) NOT IN (SELECT src_topic, src_partition, src_offset FROM {db}.merge_log "
                               "WHERE done = 1)") or 0)
        if got and held == 0 and got == n_events:
            break
        n_events = got if held == 0 and got else None
        if time.perf_counter() - t0 > 900:
            raise SystemExit("the run did not finish in 15 minutes")
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    cpu = [proc_cpu_s(p.pid) - c for p, c in zip(procs, cpu0)]
    broker_cpu, store_cpu = (proc_cpu_s(bpid) - b0) if bpid else float("nan"), self_cpu_s() - s0
    ticks = seq_records = 0
    for p in statuses:
        try:
            st = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        ticks += st.get("ticks_sent", 0)
        seq_records += st.get("forward_records", 0)
    _, lat = sink.query(f"SELECT quantileExact(0.5)(e2l_p50_ms), max(e2l_p99_ms), max(e2l_max_ms) "
                        f"FROM {db}.pipeline_metrics WHERE released > 0")
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
    sink.close()
    return {"n": n, "events": got, "wall": wall, "cpu": cpu, "broker_cpu": broker_cpu, "store_cpu": store_cpu,
            "ticks": ticks, "seq_records": seq_records, "e2l_ms": tuple(float(x or 0) for x in lat[0]) if lat else (0.0, 0.0, 0.0)}


def stage_costs(records, work: Path) -> dict:
    """Per-event CPU of the stages, in this process (numba warm), on the workload's messages."""
    from poa_stream.processors.replay import replay_merged
    from poa_stream.processors.scaled import envelope
    now = time.time()  # record times as a live broker gives them (they bound event times)
    t = time.process_time()
    per_source: dict = {}
    for i, (topic, raw) in enumerate(records):
        p = i % 3 if topic != "poa.models" else 0
        src = per_source.setdefault((topic, p), [])
        src.append(envelope(topic, p, len(src), raw, now + i / 1000, None))
    c_intake = (time.process_time() - t) / len(records)
    wire = sum(len(e.encode()) for envs in per_source.values() for e in envs) / len(records)
    replay_merged(Settings(home=work / "warm"), {k: v[:50] for k, v in per_source.items()})
    t = time.process_time()
    _, res = replay_merged(Settings(home=work / "stage"), per_source)
    c_seq = (time.process_time() - t) / len(records)
    refused = sum(1 for r in res.rows.get("events", ()) if r["status"] != "ok")
    assert refused < len(records) // 4, f"{refused} of {len(records)} refused: the stage cost would mean nothing"
    return {"intake": c_intake, "sequence": c_seq, "wire_bytes": wire}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--live-eps", type=float, default=100.0,
                    help="the latency run: 2 workers, this many messages/s produced (0: skip)")
    ap.add_argument("--live-messages", type=int, default=1500)
    ap.add_argument("--tick-after", type=float, default=2.0, help="POA_MERGE_TICK_AFTER_S of the latency run")
    args = ap.parse_args()
    console = Console()
    records = [(t, r.encode() if isinstance(r, str) else r) for t, r in generate(seed=args.seed, scale=args.scale).records]
    work = Path(tempfile.mkdtemp(prefix="poa-scaleout-"))
    from poa_stream.sinks.ch_http import ChdbHttpServer
    settings = Settings(home=work, kafka_local_port=19492, kafka_local_controller_port=19493)
    broker = LocalKafka(settings)
    broker.start()
    results = []
    try:
        with ChdbHttpServer(str(work / "store")) as server:
            for n in [int(x) for x in args.workers.split(",")]:
                console.print(f"{n} worker(s) ...")
                results.append(run(n, broker.bootstrap, server.port, records, work, work / "store"))
            live = None
            if args.live_eps > 0:
                console.print(f"latency: 2 workers, {args.live_messages} messages at {args.live_eps:.0f}/s ...")
                live = run(2, broker.bootstrap, server.port, records[:args.live_messages], work, work / "store",
                           pace_eps=args.live_eps, tick_after_s=args.tick_after)
        costs = stage_costs(records, work)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = results[0]
    x1, cpu1 = base["events"] / base["wall"], sum(base["cpu"])
    t = Table(title=f"scaled topology, {len(records):,} messages (seed {args.seed}, scale {args.scale}), "
                    f"{os.cpu_count()} cores shared with the broker and the store")
    for col in ("workers", "events/s", "raw efficiency", "worker CPU s (each)", "worker CPU s (sum)",
                "CPU-normalised eff.", "store CPU s", "broker CPU s", "ticks", "sequence records",
                "messages/event"):
        t.add_column(col, justify="right")
    for r in results:
        x = r["events"] / r["wall"]
        # input messages + the sequence records they travelled in + ticks, per event
        msgs = (len(records) + r["seq_records"] + r["ticks"]) / r["events"]
        t.add_row(str(r["n"]), f"{x:,.0f}", f"{x / (r['n'] * x1):.2f}",
                  " / ".join(f"{c:.1f}" for c in r["cpu"]), f"{sum(r['cpu']):.1f}",
                  f"{cpu1 / sum(r['cpu']):.2f}", f"{r['store_cpu']:.1f}", f"{r['broker_cpu']:.1f}",
                  str(r["ticks"]), f"{r['seq_records']:,}", f"{msgs:.2f}")
    console.print(t)
    c_int, c_seq = costs["intake"], costs["sequence"]
    c_store = max(0.0, cpu1 / base["events"] - c_int - c_seq)  # the owner's write path, from the 1-worker run
    m = Table(title="model: one core per worker, the sequence has one owner: X(n) = 1 / (c_seq + c_store + c_intake / n)")
    for col in ("workers", "predicted events/s", "predicted efficiency"):
        m.add_column(col, justify="right")
    xm1 = 1.0 / (c_seq + c_store + c_int)
    for n in (1, 2, 3, 8, 32):
        xn = 1.0 / (c_seq + c_store + c_int / n)
        m.add_row(str(n), f"{xn:,.0f}", f"{xn / (n * xm1):.2f}")
    console.print(m)
    if live is not None:
        p50, p99, mx = live["e2l_ms"]
        console.print(f"latency (record appended -> ledger written), 2 workers, {args.live_messages} messages "
                      f"produced at {args.live_eps:.0f}/s, ticks after {args.tick_after:g}s idle: median of batch p50s {p50:,.0f} ms, max batch p99 "
                      f"{p99:,.0f} ms, max {mx:,.0f} ms; {live['ticks']} ticks appended")
    console.print(f"per event: intake {c_int * 1e6:,.0f} µs, sequence (merge + core) {c_seq * 1e6:,.0f} µs, "
                  f"owner's write path and Faust {c_store * 1e6:,.0f} µs (1-worker CPU minus both); "
                  f"envelope {costs['wire_bytes']:,.0f} bytes on the wire")


if __name__ == "__main__":
    main()
