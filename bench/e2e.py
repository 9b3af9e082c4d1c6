"""End-to-end throughput: broker -> Faust worker -> embedded ClickHouse (chdb).

Produces a fixed seeded workload (``poa.scenario``) to a local broker, then measures
1. a plain aiokafka consumer loop reading the same messages (the Python client's
   ceiling on this machine: decode nothing, store nothing),
2. the replay path (the same core and chdb sink, no Kafka),
3. the real worker (``poa worker`` process), in each topology: the scaled one (the
   default for a new store: intake, the sequence topic, the deterministic merge) and the
   single one (input partitions straight into the core, arrival-order release); events/s
   between its first message and the status file reporting everything processed
   (startup and numba compilation excluded, reported apart).
Prints one table with the ratios. Usage: python bench/e2e.py [--scale 3] [--seed 7]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poa_stream.kafka_local import LocalKafka, reset_topics  # noqa: E402
from poa_stream.scenario import generate  # noqa: E402
from poa_stream.settings import Settings  # noqa: E402
from poa_stream.streams import topics  # noqa: E402
from poa_stream.streams.producer import produce_records  # noqa: E402


async def aiokafka_rate(bootstrap: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer
    c = AIOKafkaConsumer(*topics.INPUT_TOPICS, bootstrap_servers=bootstrap, group_id=None,
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         fetch_max_bytes=8 << 20, max_partition_fetch_bytes=4 << 20)
    await c.start()
    try:
        seen, t0 = 0, None
        while seen < n:
            batch = await c.getmany(timeout_ms=1000, max_records=5000)
            for msgs in batch.values():
                if t0 is None:
                    t0 = time.perf_counter()
                seen += len(msgs)
        return seen / (time.perf_counter() - t0)
    finally:
        await c.stop()


def replay_rate(records, work: Path) -> tuple[float, int]:
    from poa_stream.processors.core import Core
    from poa_stream.processors.replay import replay
    from poa_stream.sinks.chdb_sink import ChdbSink
    s = Settings(home=work)
    sink = ChdbSink(work / "replay-store")
    try:
        sink.ensure_schema()
        core = Core(s)
        t0 = time.perf_counter()
        replay(records, core, sink)
        return len(records) / (time.perf_counter() - t0), core.seq
    finally:
        sink.close()


def worker_rate(bootstrap: str, work: Path, n_logged: int, topology: str) -> dict:
    """The worker's rates from its first message: to 99% of the events the replay logs,
    and to its last logged event (an event waiting for a reference that never comes may be
    released only by the idle valve, ``POA_WORKER_IDLE_RELEASE_S``, much later)."""
    status = work / f"status-{topology}.json"
    env = dict(os.environ, POA_KAFKA_BOOTSTRAP=bootstrap, POA_STORE_DIR=str(work / f"worker-store-{topology}"),
               POA_WORKER_ID=f"poa-bench-{topology}-{int(time.time())}", POA_HOME=str(work),
               POA_WORKER_STATUS_FILE=str(status), POA_WORKER_TOPOLOGY=topology)
    t_start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "poa_stream.cli", "worker"], env=env,
                            stdout=open(work / "worker.log", "wb"), stderr=subprocess.STDOUT)
    seq, at, at99, seq99, changed = 0, None, None, 0, time.monotonic()
    try:
        while True:
            time.sleep(0.5)
            if proc.poll() is not None:
                raise RuntimeError((work / "worker.log").read_text()[-3000:])
            try:
                st = json.loads(status.read_text())
            except (OSError, ValueError):
                continue
            if st.get("seq", 0) > seq:  # the time of the last batch that logged something
                seq, at, changed = st["seq"], st["updated_unix_s"], time.monotonic()
                if at99 is None and seq >= 0.99 * n_logged:
                    at99, seq99 = at, seq
            if seq >= n_logged and st.get("buffered") == 0:
                break
            if seq and st.get("buffered") == 0 and time.monotonic() - changed > 150:
                break  # past the idle valve (120 s) with nothing more: that was all
        first = st["first_message_unix_s"]
        return {"all": seq / (at - first), "all_s": at - first, "seq": seq,
                "p99": seq99 / (at99 - first) if at99 else float("nan"), "startup": first - t_start}
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="poa-bench-"))
    settings = Settings(home=work, kafka_local_port=19392, kafka_local_controller_port=19393)
    broker = LocalKafka(settings)
    broker.start()
    try:
        reset_topics(broker.bootstrap, settings.topic_partitions)
        records = [(t, line.encode()) for t, line in generate(seed=args.seed, scale=args.scale).records]
        produce_records(broker.bootstrap, records)
        base = asyncio.run(aiokafka_rate(broker.bootstrap, len(records)))
        rep, n_logged = replay_rate(records, work)
        wrk = worker_rate(broker.bootstrap, work, n_logged, "scaled")
        one = worker_rate(broker.bootstrap, work, n_logged, "single")
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    t = Table(title=f"end to end, {len(records):,} messages (seed {args.seed}, scale {args.scale}), "
                    f"{os.cpu_count()} cores")
    for col in ("path", "events/s (to 99%)", "vs aiokafka loop", "events/s (to the last)", "last event after"):
        t.add_column(col, justify="right" if col != "path" else "left")
    t.add_row("aiokafka loop (ceiling)", f"{base:,.0f}", "1.00", "", "")
    t.add_row("replay: core + chdb", f"{rep:,.0f}", f"{rep / base:.3f}", "", "")
    for name, r in (("worker, scaled topology (default)", wrk), ("worker, single topology", one)):
        t.add_row(name, f"{r['p99']:,.0f}", f"{r['p99'] / base:.4f}", f"{r['all']:,.0f}",
                  f"{r['all_s']:.1f} s ({r['seq']:,} events)")
    console.print(t)
    console.print("scaled: intake -> sequence topic -> deterministic merge -> core -> chdb; single: Kafka -> "
                  "core -> chdb, arrival-order release")
    console.print(f"scaled / single, one worker: {wrk['p99'] / one['p99']:.2f} to 99% of the events, "
                  f"{wrk['all'] / one['all']:.2f} to the last; scaled worker start-up before its first "
                  f"sequence batch: {wrk['startup']:.1f}s")


if __name__ == "__main__":
    main()
