"""Dashboards as code (poa/grafana.py): every panel's SQL on the real engine, the committed
JSON equal to the generated JSON, and ``poa grafana push`` against a recording stub.

Panel SQL is expanded the way the ClickHouse plugin expands its macros
(tests/support/grafana_macros.py) over the seeded scenario's time range, then run by chdb
on a store built by the real replay path (tests/support/seeded_store.py).
``pipeline_metrics`` is written only by the Kafka worker: the panels over it run on
synthetic rows inserted for this test (``worker = 'synthetic-test-rows'``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import typer
from typer.testing import CliRunner

from poa_stream import grafana as g
from support.grafana_macros import MacroError, expand
from support.seeded_store import TIME_FROM, TIME_TO, add_synthetic_pipeline_metrics, seeded_sink

PANELS = g.all_panels()


def _require_sdk():
    try:
        import grafana_foundation_sdk  # noqa: F401
        import grafana_client  # noqa: F401
    except ImportError:
        msg = "the grafana extra is not installed: pip install -e '.[grafana]'"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def store(chdb_path):
    sink = seeded_sink(chdb_path)
    add_synthetic_pipeline_metrics(sink)
    sink.use_database()  # panels use unqualified names, like the datasource's defaultDatabase
    yield sink
    sink.command("USE default")  # the engine is shared by every test of the process
    sink.close()


# ---------------------------------------------------------------- macros
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
T1 = datetime(2026, 1, 2, 12, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("sql, expected", [
    ("WHERE $__timeFilter(ts)", "WHERE ts >= toDateTime(1767225600) AND ts <= toDateTime(1767357000)"),
    ("WHERE $__timeFilter_ms(ts)",
     "WHERE ts >= fromUnixTimestamp64Milli(1767225600000) AND ts <= fromUnixTimestamp64Milli(1767357000000)"),
    ("SELECT $__timeInterval(ts) AS time", "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 3600 second) AS time"),
    ("SELECT $__timeInterval_ms(ts)", "SELECT toStartOfInterval(toDateTime64(ts, 3), INTERVAL 3600000 millisecond)"),
    ("x / $__interval_s AS r", "x / 3600 AS r"),
    ("$__fromTime, $__toTime", "toDateTime(1767225600), toDateTime(1767357000)"),
    ("$__fromTime_ms", "fromUnixTimestamp64Milli(1767225600000)"),
    ("$__dateFilter(d)", "d >= toDate('2026-01-01') AND d <= toDate('2026-01-02')"),
    ("$__dt(d, t)", "(d >= toDate('2026-01-01') AND d <= toDate('2026-01-02')) AND "
                    "(t >= toDateTime(1767225600) AND t <= toDateTime(1767357000))"),
    ("$__timeFilter( toDateTime(ts, 'UTC') )",
     "toDateTime(ts, 'UTC') >= toDateTime(1767225600) AND toDateTime(ts, 'UTC') <= toDateTime(1767357000)"),
    ("$__interval $__interval_ms", "1h 3600000"),
    ("$__interval_s (SELECT 1)", "3600 (SELECT 1)"),  # a '(' after a space is not an argument list
])
def test_macros_expand_like_the_plugin(sql, expected):
    assert expand(sql, T0, T1, timedelta(hours=1)) == expected


def test_macro_errors_like_the_plugin():
    with pytest.raises(MacroError, match="missing close bracket"):
        expand("$__timeFilter(ts", T0, T1)
    with pytest.raises(MacroError, match="expected 1, received 2"):
        expand("$__timeFilter(a, b)", T0, T1)
    assert expand("$__timeInterval(ts)", T0, T1, timedelta(milliseconds=10)).endswith("INTERVAL 1 second)")


# ---------------------------------------------------------------- panel SQL on chdb
# panels that stay empty over the honest seeded scenario; tests/test_report.py
# (test_wash_flags_in_the_report_and_the_dashboard_panel) runs them on an attack world
EMPTY_WHEN_HONEST = {"Demand integrity per epoch: suspected wash usage"}


@pytest.mark.parametrize("dash, panel", PANELS, ids=[f"{d.uid}:{p.title[:48]}" for d, p in PANELS])
def test_panel_sql_runs_on_the_seeded_store(store, dash, panel):
    sql = expand(panel.sql, TIME_FROM, TIME_TO, timedelta(hours=6))
    assert "$__" not in sql
    cols, rows = store.query(sql)
    assert cols == list(panel.columns), panel.title
    if panel.title in EMPTY_WHEN_HONEST:  # its rows are checked on an attack world instead
        assert rows == [], f"{panel.title}: the honest seeded scenario raised {rows}"
        return
    assert rows, f"{panel.title}: no rows over the seeded scenario"
    if panel.kind == "timeseries":
        assert cols[0] == "time"
        times = [r[0] for r in rows]
        assert times == sorted(times), "time series must come in ascending time order"
        long_format = any(isinstance(v, str) for v in rows[0][1:])
        assert not long_format or len(cols) == 3, "long format is (time, label, value)"


def test_panels_respect_the_table_contracts():
    for dash, p in PANELS:
        for m in re.finditer(r"\b(?:FROM|JOIN)\s+(contributions|models)\b(\s+FINAL)?", p.sql):
            assert m.group(2), f"{dash.uid} / {p.title}: read {m.group(1)} with FINAL"
        assert "$__timeFilter(" in p.sql, f"{p.title}: panels follow the dashboard time range"
        if p.kind == "timeseries":
            assert "$__timeInterval(" in p.sql
        assert not re.search(r"\bpoa\.", p.sql), "tables are unqualified (datasource defaultDatabase)"
        assert p.kind in ("timeseries", "table", "barchart", "stat", "piechart")


def test_each_watch_point_has_a_panel():
    titles = [p.title for _, p in PANELS]
    for name in g.WATCH_POINTS.values():
        assert any(t.startswith(name) for t in titles), f"no panel for watch point {name!r}"


def test_the_seeded_store_shows_what_the_panels_watch(store):
    """Non-trivial content, not only non-empty: spam approved, lineage passed up, both funding sources."""
    by_title = {p.title: p for _, p in PANELS}

    def run(title_start):
        p = next(p for t, p in by_title.items() if t.startswith(title_start))
        return store.query(expand(p.sql, TIME_FROM, TIME_TO, timedelta(hours=6)))[1]

    assert sum(r[2] for r in run(f"{g.WATCH_POINTS['validators']}: spam approved")) > 0
    assert max(r[5] for r in run(f"{g.WATCH_POINTS['lineage']}: by model")) > 0
    fee, emission, share = run(f"{g.WATCH_POINTS['funding']}: usage-funded share")[0]
    assert fee > 0 and emission > 0 and 0 < share < 1


# ---------------------------------------------------------------- generated JSON
def test_committed_dashboards_equal_the_generated_ones(tmp_path):
    _require_sdk()
    written = g.generate_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(d.file_name for d in g.DASHBOARDS)
    committed = sorted(p.name for p in g.DEFAULT_OUT_DIR.glob("*.json"))
    assert committed == sorted(d.file_name for d in g.DASHBOARDS), \
        "deploy/grafana/dashboards holds exactly the generated dashboards"
    for p in written:
        assert (g.DEFAULT_OUT_DIR / p.name).read_bytes() == p.read_bytes(), \
            f"{p.name} is stale: run `poa grafana generate` and commit the result"
    assert g.render(g.ECONOMICS) == g.render(g.ECONOMICS)


def test_dashboard_json_carries_clickhouse_targets():
    _require_sdk()
    for spec in g.DASHBOARDS:
        d = json.loads(g.render(spec))
        assert d["uid"] == spec.uid and d["title"] == spec.title
        assert [p["id"] for p in d["panels"]] == list(range(1, len(spec.panels) + 1))
        for panel, p in zip(d["panels"], spec.panels, strict=True):
            assert panel["title"] == p.title and panel["type"] == p.kind
            assert panel["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": "poa-clickhouse"}
            (target,) = panel["targets"]
            assert target == {"datasource": panel["datasource"], "editorType": "sql",
                              "format": 0 if p.kind == "timeseries" else 1,
                              "queryType": "timeseries" if p.kind == "timeseries" else "table",
                              "pluginVersion": g.PLUGIN_VERSION, "rawSql": p.sql, "refId": "A"}
            assert 0 <= panel["gridPos"]["x"] < 24 and panel["gridPos"]["w"] == p.w
        assert ": null" not in g.render(spec)


def test_poa_works_without_the_grafana_extra(tmp_path):
    """The runtime never imports the SDK; the commands that need it say how to install it."""
    code = ("import sys; sys.modules['grafana_foundation_sdk'] = None; sys.modules['grafana_client'] = None\n"
            "import poa_stream.cli_tools, poa_stream.emit, poa_stream.grafana, poa_stream.report\n"
            "from poa_stream.grafana import GrafanaExtraMissing, generate_all, push\n"
            "for call in (lambda: generate_all(sys.argv[1]), lambda: push('http://127.0.0.1:9', 't')):\n"
            "    try:\n        call()\n    except GrafanaExtraMissing as exc:\n        print(exc)\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, cwd=g.DEFAULT_OUT_DIR.parents[2])
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("pip install 'poa-stream[grafana]'") == 2, res.stdout


def _cli() -> typer.Typer:
    from poa_stream.cli_tools import grafana_app
    app = typer.Typer()
    app.add_typer(grafana_app, name="grafana")
    app.command("noop")(lambda: None)
    return app


def test_cli_generate_writes_the_dashboards(tmp_path):
    _require_sdk()
    res = CliRunner().invoke(_cli(), ["grafana", "generate", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(d.file_name for d in g.DASHBOARDS)


# ---------------------------------------------------------------- push (stub Grafana)
class _Recorder(BaseHTTPRequestHandler):
    """A fake of Grafana's HTTP API, only for the push test: answers the folder and
    dashboard endpoints that grafana-client calls and records every request."""

    requests: list = []
    folder_exists = False

    def log_message(self, *args):
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        type(self).requests.append((self.command, self.path, dict(self.headers), body))
        return body

    def do_GET(self):
        self._record()
        if self.path == f"/api/folders/{g.FOLDER_UID}" and type(self).folder_exists:
            return self._answer(200, {"uid": g.FOLDER_UID, "title": g.FOLDER_TITLE})
        self._answer(404, {"message": "folder not found"})

    def do_POST(self):
        body = self._record()
        if self.path == "/api/folders":
            type(self).folder_exists = True
            return self._answer(200, {"uid": body.get("uid"), "title": body["title"]})
        if self.path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            return self._answer(200, {"status": "success", "uid": uid, "version": 1,
                                      "url": f"/d/{uid}"})
        self._answer(404, {"message": "not found"})


@pytest.fixture
def stub_grafana():
    _Recorder.requests, _Recorder.folder_exists = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder
    server.shutdown()
    server.server_close()


def test_push_creates_folder_and_overwrites_dashboards(stub_grafana, monkeypatch):
    """grafana-client against a recording stub (no Grafana server here): the folder is
    created once, every dashboard is posted with overwrite and the bearer token."""
    _require_sdk()
    url, rec = stub_grafana
    monkeypatch.setenv("POA_GRAFANA_TOKEN", "glsa_test_token")
    res = CliRunner().invoke(_cli(), ["grafana", "push", "--url", url])
    assert res.exit_code == 0, res.output
    calls = [(m, p) for m, p, _, _ in rec.requests]
    assert calls == ([("GET", f"/api/folders/{g.FOLDER_UID}"), ("POST", "/api/folders")]
                     + [("POST", "/api/dashboards/db")] * len(g.DASHBOARDS))
    for _, _, headers, _ in rec.requests:
        assert headers.get("Authorization") == "Bearer glsa_test_token"
    assert rec.requests[1][3] == {"title": "PoA Stream", "uid": g.FOLDER_UID}
    posted = [body for _, path, _, body in rec.requests if path == "/api/dashboards/db"]
    for body, spec in zip(posted, g.DASHBOARDS, strict=True):
        assert body["overwrite"] is True and body["folderUid"] == g.FOLDER_UID
        assert body["dashboard"] == g.dashboard_json(spec)
    assert "success: poa-economics" in res.output

    rec.requests.clear()  # a second push finds the folder and only overwrites
    assert CliRunner().invoke(_cli(), ["grafana", "push", "--url", url + "/"]).exit_code == 0
    assert [p for _, p, _, _ in rec.requests].count("/api/folders") == 0


def test_push_without_token_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("POA_GRAFANA_TOKEN", raising=False)
    res = CliRunner().invoke(_cli(), ["grafana", "push", "--url", "http://127.0.0.1:9"])
    assert res.exit_code == 2, (res.output, repr(res.exception))
    assert "POA_GRAFANA_TOKEN" in " ".join(res.output.split())
