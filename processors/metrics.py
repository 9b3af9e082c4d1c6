"""Worker telemetry: Prometheus metrics and the ops HTTP endpoint (/metrics, /health, /ready).

``WorkerMetrics`` owns one ``CollectorRegistry`` (not the process-global one, so tests and
several pipelines in one process do not collide). The pipeline (processors/app.py) updates
the counters and histograms as batches go through; the gauges are read from the pipeline
when Prometheus scrapes, so they are never stale. Metric names (all prefixed ``poa_``):

- ``messages_total{topic}``: input messages consumed;
- ``events_total{type,outcome}``: events released into the log, ``outcome`` their status
  (``ok``, ``spam``, ...), and ``outcome="deadletter"`` for dead letters;
- ``deadletters_total{topic,reason}``: ``reason`` is the reason's class (its text before
  the first ``:``, digits folded), bounded so labels cannot explode;
- ``batch_seconds`` (histogram): one input batch, decode to stored and published;
- ``event_to_ledger_seconds`` (histogram): from the broker's append time of an event's
  record to the batch holding it written to the store;
- ``store_write_retries_total``; ``outbox_publish_failures_total``,
  ``outbox_messages_total``; gauges ``outbox_ready`` (1 while the transactional producer
  is up), ``outbox_unpublished_seq`` (stored seqs not yet published);
- ``seq``, ``buffered_events``, ``ready``, ``snapshot_age_seconds`` (absent without snapshots);
- scaled topology only: ``sequence_owner``, ``merge_held_messages``, ``intake_forwarded_total``,
  ``intake_records_total``, ``merge_ticks_total``;
- ``consumer_lag{topic,partition}`` and ``consumer_lag_total``: read from the broker
  (end offset minus the group's committed offset), cached ``LAG_CACHE_S``; ``consumer_lag_up``
  is 0 when the broker could not be asked.

``OpsServer`` serves ``/metrics`` (text exposition format), ``/health`` and ``/ready``
(JSON, 200 or 503) on ``POA_METRICS_HOST:POA_METRICS_PORT`` (127.0.0.1:9464 by default; 0
picks a free port, -1 turns it off). No credentials: it exposes counts, never data.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from poa_stream.httpd import BackgroundHTTPServer
from poa_stream.streams import topics

LAG_CACHE_S = 10.0
_TYPE_OF_TOPIC = {t: name for name, t in topics.TOPIC_OF_TYPE.items()}
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def reason_class(reason: str) -> str:
    """A dead letter's reason as a bounded label: the text before the first ``:``/``(``,
    digits folded to N, at most 48 characters."""
    head = re.split(r"[:(\[{]", reason or "", maxsplit=1)[0].strip().lower()
    return re.sub(r"\d+", "N", head)[:48] or "unknown"


class WorkerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages = Counter("poa_messages", "Input messages consumed", ["topic"], registry=r)
        self.events = Counter("poa_events", "Events by type and outcome", ["type", "outcome"], registry=r)
        self.deadletters = Counter("poa_deadletters", "Dead letters by topic and reason class",
                                   ["topic", "reason"], registry=r)
        self.batch_seconds = Histogram("poa_batch_seconds", "Input batch: decode to stored and published",
                                       buckets=LATENCY_BUCKETS_S, registry=r)
        self.e2l_seconds = Histogram("poa_event_to_ledger_seconds",
                                     "Broker append time of an event's record to its batch written",
                                     buckets=LATENCY_BUCKETS_S, registry=r)
        self.store_retries = Counter("poa_store_write_retries", "Store writes retried", registry=r)
        self.outbox_failures = Counter("poa_outbox_publish_failures", "Output publishes that failed", registry=r)
        self.outbox_messages = Counter("poa_outbox_messages", "Output messages published", registry=r)
        self._gauges = None

    def observe_rows(self, rows: dict, e2l_ms: list[float]) -> None:
        """A written batch's rows: events by type and status, dead letters, latencies (ms)."""
        for r in rows.get("events", ()):
            self.events.labels(r.get("type", ""), r.get("status", "")).inc()
        for r in rows.get("deadletter", ()):
            self.events.labels(_TYPE_OF_TOPIC.get(r.get("topic", ""), "unknown"), "deadletter").inc()
            self.deadletters.labels(r.get("topic", ""), reason_class(r.get("reason", ""))).inc()
        for ms in e2l_ms:
            self.e2l_seconds.observe(max(0.0, ms) / 1000.0)

    def attach(self, pipe, lag_source=None) -> None:
        """Scrape-time gauges read from ``pipe``; ``lag_source()`` -> [PartitionProgress]."""
        self._gauges = _PipelineGauges(pipe, lag_source)
        self.registry.register(self._gauges)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _PipelineGauges:
    def __init__(self, pipe, lag_source):
        self.pipe, self.lag_source = pipe, lag_source
        self._lag: tuple[float, list, bool] = (0.0, [], False)
        self._lag_lock = threading.Lock()

    def _lag_now(self) -> tuple[list, bool]:
        with self._lag_lock:
            at, parts, up = self._lag
            if self.lag_source is not None and time.monotonic() - at > LAG_CACHE_S:
                try:
                    parts, up = list(self.lag_source()), True
                except Exception:
                    parts, up = [], False
                self._lag = (time.monotonic(), parts, up)
            return parts, up

    def describe(self):
        return []  # collected at scrape time only

    def collect(self):
        p = self.pipe
        g = GaugeMetricFamily
        yield g("poa_seq", "Events logged (the ledger's sequence)", value=p.core.seq)
        yield g("poa_buffered_events", "Events waiting for the ordering watermark", value=len(p.core.buffer))
        ok, _ = p.readiness()
        yield g("poa_ready", "1 when the core is restored and partitions are assigned", value=1 if ok else 0)
        yield g("poa_outbox_ready", "1 while the transactional output producer is up",
                value=1 if p.outbox is not None else 0)
        yield g("poa_outbox_unpublished_seq", "Stored seqs whose output is not yet published",
                value=max(0, p.core.seq - p._published_seq))
        if p.last_snapshot_unix is not None:
            yield g("poa_snapshot_age_seconds", "Seconds since the last core snapshot",
                    value=time.time() - p.last_snapshot_unix)
        merge = getattr(p, "merge", None)  # the scaled topology (processors/scaled.py)
        if merge is not None:
            yield g("poa_sequence_owner", "1 while this worker owns the sequence (scaled topology)",
                    value=1 if p.active else 0)
            yield g("poa_merge_held_messages", "Messages waiting for every input partition's frontier",
                    value=len(merge.heap))
            yield g("poa_intake_forwarded_total", "Input messages this worker forwarded to the sequence",
                    value=p.forwarded)
            yield g("poa_intake_records_total", "Sequence records those messages travelled in (several per record)",
                    value=p.forward_records)
            yield g("poa_merge_ticks_total", "Tick records this worker appended to idle input partitions",
                    value=p.ticks_sent)
        parts, up = self._lag_now()
        yield g("poa_consumer_lag_up", "1 when the broker answered the last lag query", value=1 if up else 0)
        lag = g("poa_consumer_lag", "Messages behind the end offset, per input partition (from the broker)",
                labels=["topic", "partition"])
        for part in parts:
            lag.add_metric([part.topic, str(part.partition)], part.lag)
        yield lag
        yield g("poa_consumer_lag_total", "Messages behind, all input partitions", value=sum(x.lag for x in parts))


class _OpsHandler(BaseHTTPRequestHandler):
    server_version = "poa-ops"

    def log_message(self, *args) -> None:  # scrapes every few seconds: not worth a log line
        pass

    def do_GET(self) -> None:  # noqa: N802
        ops: OpsServer = self.server.owner  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                body, ctype, code = ops.metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8", 200
            elif path in ops.probes:
                ok, detail = ops.probes[path]()
                body = json.dumps({"ok": ok, **detail}).encode()
                ctype, code = "application/json", 200 if ok else 503
            else:
                body, ctype, code = b"not found: try /metrics, /health or /ready\n", "text/plain", 404
        except Exception as exc:  # a probe that raises is a failed probe, not a dead server
            body, ctype, code = json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}).encode(), \
                "application/json", 500
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class OpsServer:
    def __init__(self, metrics: WorkerMetrics, probes: dict, host: str = "127.0.0.1", port: int = 0):
        self.metrics, self.probes = metrics, dict(probes)
        self._server = BackgroundHTTPServer(host, port, _OpsHandler, self, "poa-ops-http")

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> "OpsServer":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
