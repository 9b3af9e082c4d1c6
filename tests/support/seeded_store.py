"""A seeded pipeline store for the dashboard, report and query tests.

``seeded_sink(chdb_path)`` returns a :class:`sinks.chdb_sink.ChdbSink` on the session's one
chdb path (tests/conftest.py ``chdb_path``) whose database :data:`DATABASE` holds the
replay of ``poa.scenario.generate(seed=7, scale=0.3)`` through the real processing core
(``processors.replay.replay`` with ``processors.core.Core``). It is built once per test
process (about 10 s) and reused; the caller closes the sink it gets.

``pipeline_metrics`` is written only by the Kafka worker, so a replay leaves it empty;
:func:`add_synthetic_pipeline_metrics` inserts a few rows, labelled
``worker = 'synthetic-test-rows'``, for tests of panels that read it.
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

DATABASE = "seeded_s7"
SEED, SCALE = 7, 0.3
# Event time of the scenario (poa.scenario: 3 days from 2026-01-01, late validations after).
TIME_FROM = datetime(2026, 1, 1, tzinfo=timezone.utc)
TIME_TO = datetime(2026, 1, 5, tzinfo=timezone.utc)
SYNTHETIC_WORKER = "synthetic-test-rows"

_lock = threading.Lock()
_built: set[str] = set()


def _build(sink, settings) -> None:
    from poa_stream.scenario import generate
    from poa_stream.processors.core import Core
    from poa_stream.processors.replay import replay
    sink.ensure_schema()
    if sink.scalar(f"SELECT count() FROM {sink.database}.events"):
        return  # built by an earlier test module of this process
    scenario = generate(seed=SEED, scale=SCALE)
    replay(((topic, raw.encode("utf-8")) for topic, raw in scenario.records), Core(settings), sink)


def seeded_sink(chdb_path: Path, home: Path | None = None):
    """An open sink on the seeded database (built on first use in this process)."""
    from poa_stream.settings import Settings
    from poa_stream.sinks.chdb_sink import ChdbSink
    sink = ChdbSink(chdb_path, DATABASE)
    key = str(Path(chdb_path).resolve())
    with _lock:
        if key not in _built:
            _build(sink, Settings(home=home or Path(chdb_path) / "seeded-home"))
            _built.add(key)
    return sink


def add_synthetic_pipeline_metrics(sink) -> int:
    """Insert (once) synthetic worker-health rows, one per topic and hour of the scenario."""
    db = sink.database
    if sink.scalar(f"SELECT count() FROM {db}.pipeline_metrics WHERE worker = '{SYNTHETIC_WORKER}'"):
        return 0
    topics = ["poa.contributions", "poa.validations", "poa.models", "poa.usage"]
    rows: dict[str, list] = {c: [] for c in ("ts", "worker", "topic", "messages", "deadlettered",
                                              "released", "buffered", "lag", "batch_ms",
                                              "e2l_p50_ms", "e2l_p99_ms", "e2l_max_ms")}
    hours = int((TIME_TO - TIME_FROM) / timedelta(hours=1))
    for h in range(hours):
        for k, topic in enumerate(topics):
            n = 50 + 10 * k + h % 7
            for col, value in (("ts", TIME_FROM + timedelta(hours=h, minutes=k)),
                               ("worker", SYNTHETIC_WORKER), ("topic", topic), ("messages", n),
                               ("deadlettered", h % 5 == 0), ("released", n - 1), ("buffered", h % 11),
                               ("lag", (h * 13 + k) % 40), ("batch_ms", 20.0 + k),
                               ("e2l_p50_ms", 40.0 + h % 9), ("e2l_p99_ms", 120.0 + h % 13),
                               ("e2l_max_ms", 200.0)):
                rows[col].append(int(value) if isinstance(value, bool) else value)
    sink.insert("pipeline_metrics", rows)
    return len(rows["ts"])
