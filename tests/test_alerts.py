"""Alert rules as code (poa/alerts.py): each Grafana rule's ClickHouse query runs on chdb
over pipeline_metrics rows that should fire it and rows that should not; the provisioning
file is what `poa grafana generate` writes; the Prometheus rules name metrics the worker
really exports."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import yaml

from poa_stream.alerts import AlertThresholds, grafana_provisioning, prometheus_rules, rules, write_all

T = AlertThresholds()


def put(sink, rows):
    cols = ("ts", "worker", "topic", "messages", "deadlettered", "released", "buffered", "lag", "batch_ms",
            "e2l_p50_ms", "e2l_p99_ms", "e2l_max_ms")
    data = {c: [] for c in cols}
    for ago_min, topic, messages, dead, lag in rows:
        vals = (datetime.now(timezone.utc) - timedelta(minutes=ago_min), "w", topic, messages, dead, messages,
                0, lag, 1.0, 1.0, 1.0, 1.0)
        for c, v in zip(cols, vals):
            data[c].append(v)
    sink.insert("pipeline_metrics", data)


def value(sink, rule_uid: str) -> float:
    r = {r.uid: r for r in rules(T, sink.database)}[rule_uid]
    return float(sink.scalar(r.sql))


def fires(sink, uid: str) -> bool:
    r = {r.uid: r for r in rules(T, sink.database)}[uid]
    return value(sink, uid) > r.threshold


def test_no_rows_fire_nothing(sink):
    assert not any(fires(sink, r.uid) for r in rules(T, sink.database))


def test_lag_uses_each_topics_latest_lag(sink):
    put(sink, [(20, "poa.usage", 100, 0, 50_000), (1, "poa.usage", 100, 0, 10), (1, "poa.contributions", 10, 0, 5)])
    assert value(sink, "poa-lag") == 15 and not fires(sink, "poa-lag")  # caught up since
    put(sink, [(0, "poa.usage", 100, 0, T.lag_messages + 1)])
    assert fires(sink, "poa-lag")


def test_deadletter_rate_needs_volume_and_ratio(sink):
    put(sink, [(1, "poa.usage", 10, 5, 0)])  # half dead, but only 10 messages
    assert not fires(sink, "poa-deadletter-rate")
    put(sink, [(2, "poa.usage", 1000, 20, 0), (30, "poa.usage", 1000, 900, 0)])  # the old burst is outside 15 min
    assert not fires(sink, "poa-deadletter-rate")
    put(sink, [(3, "poa.usage", 1000, 200, 0)])
    assert fires(sink, "poa-deadletter-rate")


def test_stalled_only_with_lag_and_silence(sink):
    put(sink, [(T.stall_minutes + 5, "poa.usage", 100, 0, 0)])  # idle: nothing to read
    assert not fires(sink, "poa-stalled")
    put(sink, [(T.stall_minutes + 1, "poa.usage", 100, 0, 40)])  # silent with input waiting
    assert fires(sink, "poa-stalled")
    put(sink, [(0, "poa.usage", 100, 0, 40)])  # writing again
    assert not fires(sink, "poa-stalled")


def test_provisioning_files(tmp_path):
    g, p = write_all(tmp_path / "g.yaml", tmp_path / "p.yml")
    doc = yaml.safe_load(g.read_text())
    assert doc == grafana_provisioning() and doc["apiVersion"] == 1
    for rule in doc["groups"][0]["rules"]:
        refs = {d["refId"]: d for d in rule["data"]}
        assert rule["condition"] in refs and refs["A"]["datasourceUid"] == "poa-clickhouse"
        assert refs["C"]["model"]["expression"] == "B" and refs["B"]["model"]["expression"] == "A"
    # the committed files are the generated ones (regenerate with `poa grafana generate`)
    from poa_stream.alerts import GRAFANA_ALERTS, PROMETHEUS_ALERTS
    assert GRAFANA_ALERTS.read_text() == g.read_text() and PROMETHEUS_ALERTS.read_text() == p.read_text()


def test_prometheus_rules_name_exported_metrics():
    from types import SimpleNamespace

    from poa_stream.processors.metrics import WorkerMetrics
    m = WorkerMetrics()
    m.attach(SimpleNamespace(core=SimpleNamespace(seq=0, buffer=[]), outbox=None, _published_seq=0,
                             last_snapshot_unix=1.0, readiness=lambda: (True, {})), lag_source=lambda: [])
    m.observe_rows({"deadletter": [{"topic": "poa.usage", "reason": "x"}]}, [])
    m.messages.labels("poa.usage").inc()
    exported = set(re.findall(r"^(poa_\w+?)(?:\{| )", m.exposition().decode(), re.M))
    for rule in prometheus_rules()["groups"][0]["rules"]:
        used = set(re.findall(r"\bpoa_\w+", rule["expr"]))
        assert used and used <= exported, (rule["alert"], used - exported)
