"""Run the real ``poa worker`` (Faust) as a child process for integration tests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class WorkerProcess:
    def __init__(self, home: Path, **env: str):
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.status_file = home / "worker-status.json"
        self.log_path = home / "worker.log"
        self.env = {**os.environ, "POA_HOME": str(home), "POA_WORKER_STATUS_FILE": str(self.status_file),
                    "POA_METRICS_PORT": "0",  # a free port: several workers may run side by side
                    **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        self.status_file.unlink(missing_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "poa_stream.cli", "worker", "--loglevel", "info"],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        return self

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_until(self, predicate, timeout_s: float = 120.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"worker exited ({self.proc.returncode}) waiting for {what}:\n{self.log_tail()}")
            if predicate():
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; status {self.status()}\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR2)  # the worker dumps its threads' stacks to its log
                time.sleep(2)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
