"""processors/metrics.py: counters from written rows, bounded dead-letter labels, the ops
endpoint's routes and status codes (a real HTTP server on a free port)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from poa_stream.processors.metrics import OpsServer, WorkerMetrics, reason_class


def samples(m: WorkerMetrics) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(m.exposition().decode()) for s in fam.samples}


def test_reason_class_is_bounded():
    assert reason_class("internal error: ZeroDivisionError: division by zero") == "internal error"
    assert reason_class("fee 12 below 34 (policy)") == "fee N below N"
    assert reason_class("") == "unknown"
    many = {reason_class(f"event too far in the future: {i} s") for i in range(1000)}
    assert many == {"event too far in the future"}
    assert len(reason_class("x" * 500)) == 48


def test_rows_counted_by_type_outcome_and_reason():
    m = WorkerMetrics()
    m.observe_rows({"events": [{"type": "usage", "status": "ok"}, {"type": "usage", "status": "ok"},
                               {"type": "contribution", "status": "spam"}],
                    "deadletter": [{"topic": "poa.usage", "reason": "invalid event: fee must be >= 0"}]},
                   [120.0, 5.0])
    s = samples(m)
    assert s[("poa_events_total", (("outcome", "ok"), ("type", "usage")))] == 2
    assert s[("poa_events_total", (("outcome", "spam"), ("type", "contribution")))] == 1
    assert s[("poa_events_total", (("outcome", "deadletter"), ("type", "usage")))] == 1
    assert s[("poa_deadletters_total", (("reason", "invalid event"), ("topic", "poa.usage")))] == 1
    assert s[("poa_event_to_ledger_seconds_count", ())] == 2
    assert s[("poa_event_to_ledger_seconds_bucket", (("le", "0.1"),))] == 1  # 5 ms in, 120 ms out


def fake_pipe(ready: bool):
    core = SimpleNamespace(seq=7, buffer=[1, 2])
    return SimpleNamespace(core=core, outbox=None, _published_seq=5, last_snapshot_unix=None,
                           readiness=lambda: (ready, {"assigned": []}))


def test_ops_endpoint_routes_and_codes():
    m = WorkerMetrics()
    pipe = fake_pipe(ready=False)
    calls = []

    def lag():
        calls.append(1)
        return [SimpleNamespace(topic="poa.usage", partition=0, lag=4)]
    m.attach(pipe, lag_source=lag)
    probes = {"/health": lambda: (True, {"loop_age_s": 0.1}), "/ready": lambda: pipe.readiness()}
    srv = OpsServer(m, probes, "127.0.0.1", 0).start()
    try:
        text = urllib.request.urlopen(srv.url + "/metrics", timeout=5).read().decode()
        s = {(x.name, tuple(sorted(x.labels.items()))): x.value
             for fam in text_string_to_metric_families(text) for x in fam.samples}
        assert s[("poa_seq", ())] == 7 and s[("poa_buffered_events", ())] == 2
        assert s[("poa_outbox_unpublished_seq", ())] == 2 and s[("poa_outbox_ready", ())] == 0
        assert s[("poa_consumer_lag", (("partition", "0"), ("topic", "poa.usage")))] == 4
        assert ("poa_snapshot_age_seconds", ()) not in s
        urllib.request.urlopen(srv.url + "/metrics", timeout=5).read()
        assert len(calls) == 1  # the broker is asked at most every LAG_CACHE_S
        assert json.loads(urllib.request.urlopen(srv.url + "/health", timeout=5).read())["ok"] is True
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(srv.url + "/ready", timeout=5)
        assert e.value.code == 503 and json.loads(e.value.read())["ok"] is False
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(srv.url + "/nope", timeout=5)
        assert e.value.code == 404
    finally:
        srv.stop()
