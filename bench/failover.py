"""Failover: how long a worker restarted after SIGKILL takes to commit its first batch.

Starts a local broker, produces a seeded workload, runs the real ``poa worker`` until it
has committed a few batches, SIGKILLs it and starts a replacement at once, then times
replacement start -> its first committed batch (status file). Done for dynamic group
membership (``POA_WORKER_INSTANCE_ID=""``: the replacement waits until the broker expires
the dead member's session) and for static membership (the default instance id: the
replacement takes the partitions back at once), both at the same session timeout, each
``--rounds`` times. Prints one table with the ratio. Usage:
python bench/failover.py [--session-s 30] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
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


def start(work: Path, env: dict) -> tuple[subprocess.Popen, Path]:
    status = work / "status.json"
    status.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "poa_stream.cli", "worker"], env={**os.environ, **env},
                            stdout=open(work / "worker.log", "ab"), stderr=subprocess.STDOUT)
    return proc, status


def wait_batches(proc: subprocess.Popen, status: Path, n: int, work: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((work / "worker.log").read_text()[-3000:])
        try:
            if json.loads(status.read_text()).get("batches", 0) >= n:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no {n} batches in {timeout_s}s")


def failover_s(bootstrap: str, work: Path, instance_id: str, session_s: float) -> float:
    work.mkdir(parents=True, exist_ok=True)
    env = dict(POA_KAFKA_BOOTSTRAP=bootstrap, POA_HOME=str(work), POA_STORE_DIR=str(work / "store"),
               POA_WORKER_ID="poa-failover-" + uuid.uuid4().hex[:8], POA_WORKER_INSTANCE_ID=instance_id,
               POA_WORKER_SESSION_TIMEOUT_S=str(session_s), POA_WORKER_BATCH_MAX="50",
               POA_WORKER_STATUS_FILE=str(work / "status.json"),
               POA_WORKER_TOPOLOGY="single")  # the topology the README's failover figures were measured on
    proc, status = start(work, env)
    try:
        wait_batches(proc, status, 3, work)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc, status = start(work, env)
    t0 = time.monotonic()
    try:
        wait_batches(proc, status, 1, work)
        return time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--session-s", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="poa-failover-"))
    settings = Settings(home=work, kafka_local_port=19492, kafka_local_controller_port=19493)
    broker = LocalKafka(settings)
    broker.start()
    results: dict[str, list[float]] = {"dynamic": [], "static": []}
    try:
        records = [(t, line.encode()) for t, line in generate(seed=5, scale=2).records]
        for r in range(args.rounds):
            for mode, inst in (("dynamic", ""), ("static", "worker-0")):
                reset_topics(broker.bootstrap, settings.topic_partitions)
                produce_records(broker.bootstrap, records)
                results[mode].append(failover_s(broker.bootstrap, work / f"{mode}-{r}", inst, args.session_s))
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    dyn, sta = statistics.median(results["dynamic"]), statistics.median(results["static"])
    t = Table(title=f"failover after SIGKILL: replacement start -> first committed batch "
                    f"(session {args.session_s:.0f} s, median of {args.rounds}, {os.cpu_count()} cores)")
    for col in ("group membership", "seconds", "runs", "vs dynamic"):
        t.add_column(col, justify="left" if col == "group membership" else "right")
    t.add_row("dynamic (baseline)", f"{dyn:.1f}", ", ".join(f"{x:.1f}" for x in results["dynamic"]), "1.00")
    t.add_row("static: POA_WORKER_INSTANCE_ID", f"{sta:.1f}", ", ".join(f"{x:.1f}" for x in results["static"]),
              f"{sta / dyn:.2f}")
    Console().print(t)


if __name__ == "__main__":
    main()
