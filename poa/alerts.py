"""Alert rules as code: Grafana-managed rules on the ClickHouse datasource, and the same
three alerts as Prometheus rules on the worker's /metrics (processors/metrics.py).

``poa grafana generate`` writes both:

- ``deploy/grafana/provisioning/alerting/poa-alerts.yaml``: Grafana's alerting file
  provisioning (apiVersion 1, one rule group), each rule a ClickHouse query (``A``)
  reduced to its last value (``B``) and compared with a threshold (``C``);
- ``deploy/prometheus/poa-alerts.yml``: a Prometheus rule group for those who scrape.

The alerts (thresholds are ``AlertThresholds`` fields; hand-set defaults, not calibrated
on production traffic, which we do not have):

- **lag**: input messages behind, the latest lag of each topic summed
  (``pipeline_metrics``; Prometheus: ``poa_consumer_lag_total`` read from the broker) above
  ``lag_messages`` for ``for_lag``;
- **dead-letter rate**: dead letters over input messages in the last 15 minutes above
  ``deadletter_ratio`` (with at least ``deadletter_min_messages`` messages);
- **stalled**: the worker wrote no batch for ``stall_minutes`` while its last batch still
  saw lag (an idle worker with nothing to read is not stalled). Prometheus adds the case
  the store cannot see: lag on the broker while ``poa_seq`` did not move.

Each ClickHouse query returns one row with one numeric column ``value`` (tested against
chdb on rows that should and should not fire: tests/test_alerts.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRAFANA_ALERTS = ROOT / "deploy" / "grafana" / "provisioning" / "alerting" / "poa-alerts.yaml"
PROMETHEUS_ALERTS = ROOT / "deploy" / "prometheus" / "poa-alerts.yml"
DATASOURCE_UID = "poa-clickhouse"  # deploy/grafana/provisioning/datasources


@dataclass(frozen=True)
class AlertThresholds:
    lag_messages: int = 10_000
    for_lag: str = "5m"
    deadletter_ratio: float = 0.05
    deadletter_min_messages: int = 100
    stall_minutes: int = 10


@dataclass(frozen=True)
class Rule:
    uid: str
    title: str
    sql: str  # one row, one numeric column `value`
    threshold: float  # fires when value > threshold
    for_: str
    summary: str
    promql: str


def rules(t: AlertThresholds = AlertThresholds(), database: str = "poa") -> list[Rule]:
    pm = f"{database}.pipeline_metrics"
    return [
        Rule("poa-lag", "PoA worker lag",
             f"SELECT toFloat64(sum(l)) AS value FROM (SELECT topic, argMax(lag, ts) AS l FROM {pm} "
             f"WHERE ts > now() - INTERVAL 30 MINUTE GROUP BY topic)",
             t.lag_messages, t.for_lag,
             f"More than {t.lag_messages:,} input messages behind: the worker does not keep up",
             f"poa_consumer_lag_total > {t.lag_messages}"),
        Rule("poa-deadletter-rate", "PoA dead-letter rate",
             f"SELECT if(sum(messages) >= {t.deadletter_min_messages}, sum(deadlettered) / sum(messages), 0) "
             f"AS value FROM {pm} WHERE ts > now() - INTERVAL 15 MINUTE",
             t.deadletter_ratio, "5m",
             f"More than {t.deadletter_ratio:.0%} of input messages dead-lettered in 15 minutes: "
             "a producer sends malformed or hostile events (see poa.deadletter by reason)",
             f"(sum(rate(poa_deadletters_total[15m])) / clamp_min(sum(rate(poa_messages_total[15m])), 1e-9)) "
             f"> {t.deadletter_ratio} and sum(increase(poa_messages_total[15m])) >= {t.deadletter_min_messages}"),
        Rule("poa-stalled", "PoA processing stalled",
             f"SELECT toFloat64(max(ts) < now() - INTERVAL {t.stall_minutes} MINUTE AND argMax(lag, ts) > 0) "
             f"AS value FROM {pm} WHERE ts > now() - INTERVAL 1 DAY",
             0, "0m",
             f"No batch written for {t.stall_minutes} minutes while input waits: the worker is hung, "
             "crashed or cannot write to the store",
             f"poa_consumer_lag_total > 0 and delta(poa_seq[{t.stall_minutes}m]) == 0"),
    ]


def grafana_provisioning(t: AlertThresholds = AlertThresholds(), database: str = "poa") -> dict:
    """Grafana's alerting provisioning file as a dict (YAML-serialisable)."""
    out = []
    for r in rules(t, database):
        out.append({
            "uid": r.uid, "title": r.title, "condition": "C",
            "data": [
                {"refId": "A", "relativeTimeRange": {"from": 3600, "to": 0}, "datasourceUid": DATASOURCE_UID,
                 "model": {"refId": "A", "editorType": "sql", "queryType": "table", "format": 1,
                           "rawSql": r.sql}},
                {"refId": "B", "datasourceUid": "__expr__",
                 "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last",
                           "settings": {"mode": "dropNN"}}},
                {"refId": "C", "datasourceUid": "__expr__",
                 "model": {"refId": "C", "type": "threshold", "expression": "B",
                           "conditions": [{"evaluator": {"type": "gt", "params": [r.threshold]}}]}},
            ],
            "noDataState": "OK", "execErrState": "Error", "for": r.for_,
            "labels": {"service": "poa-stream", "severity": "warning" if r.uid == "poa-deadletter-rate" else "critical"},
            "annotations": {"summary": r.summary},
        })
    return {"apiVersion": 1,
            "groups": [{"orgId": 1, "name": "poa-stream", "folder": "PoA Stream", "interval": "1m", "rules": out}]}


def prometheus_rules(t: AlertThresholds = AlertThresholds()) -> dict:
    return {"groups": [{"name": "poa-stream", "rules": [
        {"alert": r.uid.replace("-", "_"), "expr": r.promql, "for": r.for_ if r.for_ != "0m" else "1m",
         "labels": {"service": "poa-stream"}, "annotations": {"summary": r.summary}}
        for r in rules(t)] + [
        {"alert": "poa_worker_not_ready", "expr": "poa_ready == 0", "for": "5m",
         "labels": {"service": "poa-stream"},
         "annotations": {"summary": "The worker is not restored or has no partitions assigned"}}]}]}


def write_all(grafana_path: Path = GRAFANA_ALERTS, prometheus_path: Path = PROMETHEUS_ALERTS) -> list[Path]:
    import yaml
    header = "# Generated by `poa grafana generate` from poa/alerts.py: edit the code, not this file.\n"
    for path, data in ((grafana_path, grafana_provisioning()), (prometheus_path, prometheus_rules())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + yaml.safe_dump(data, sort_keys=False, width=120))
    return [grafana_path, prometheus_path]
