"""``poa report``: a self-contained HTML file, rendered by a real browser (headless Chromium).

The report of the seeded store (tests/support/seeded_store.py) is opened with Debian's
``chromium`` twice: ``--screenshot`` (kept in the test's tmp_path) and ``--dump-dom``, whose
DOM must hold the SVG charts with their bars and lines, and every chart title. Without
chromium the browser test skips, except under CI (``CI=true``), where it fails.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from poa_stream import grafana as g
from poa_stream.report import concentration, render, write_report
from support.grafana_macros import expand
from support.seeded_store import DATABASE, TIME_FROM, TIME_TO, seeded_sink

CHART_TITLES = [
    "Rewards from usage vs emissions per epoch", "Demand vs incentive activity per hour", "Rewards by role",
    "Top earners", "Concentration of contributor rewards", "Attributed share by datanet",
    "Attributed share by model", "Attribution across derived and fine-tuned models: share passed up the lineage",
    "Evidence mix", "Usage with no evidence", "Flags by reason", "Duplicate and farm clusters",
    "Validator reliability ranking", "Validator effectiveness against spam: spam approved by validators",
    "Flagged validators", "Dead letters by reason",
]


@pytest.fixture(scope="module")
def store(chdb_path):
    sink = seeded_sink(chdb_path)
    yield sink
    sink.command("USE default")  # the engine is shared by every test of the process
    sink.close()


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def _browser(exe: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", *args],
                          capture_output=True, timeout=timeout_s, check=False)


class _SvgCensus(HTMLParser):
    """Counts <svg> elements and the <rect>/<path> drawn inside each."""

    def __init__(self):
        super().__init__()
        self.svgs: list[dict] = []
        self.depth = 0
        self.captions: list[str] = []
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            self.svgs.append({"rect": 0, "path": 0, "label": dict(attrs).get("aria-label", "")})
            self.depth += 1
        elif self.depth and tag in ("rect", "path"):
            self.svgs[-1][tag] += 1
        elif tag == "figcaption":
            self._in_caption = True
            self.captions.append("")

    def handle_endtag(self, tag):
        if tag == "svg":
            self.depth -= 1
        elif tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data):
        if self._in_caption:
            self.captions[-1] += data


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_is_self_contained(store, tmp_path):
    path = write_report(store, tmp_path / "sub" / "report.html")
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|<img|@import|url\(|src=", html, re.I), "no external resources"
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html), "no network addresses"
    for title in CHART_TITLES:
        assert f"<figcaption>{title}</figcaption>" in html.replace("&#x27;", "'"), title
    assert render(store) == html, "the same store gives the same bytes"


def test_report_concentration_matches_the_dashboard_panel(store):
    """The report's Gini/HHI (Python) equal the Grafana panel's (ClickHouse SQL)."""
    panel = next(p for _, p in g.all_panels() if p.title.startswith("Concentration of contributor rewards ("))
    store.use_database()
    _, rows = store.query(expand(panel.sql, TIME_FROM, TIME_TO, timedelta(hours=1)))
    earners, gini, hhi, top10 = rows[0]
    db = store.database
    _, totals = store.query(f"SELECT sum(amount) FROM {db}.reward_ledger WHERE role = 'contributor' "
                            f"GROUP BY account")
    py = concentration([float(t) for (t,) in totals])
    assert earners == len(totals)
    assert (round(py[0], 4), round(py[1], 4), round(py[2], 4)) == (gini, hhi, top10)


def test_report_renders_in_headless_chromium(store, tmp_path):
    exe = _chromium()
    path = write_report(store, tmp_path / "report.html")
    shot = tmp_path / "report.png"
    res = _browser(exe, f"--screenshot={shot}", "--window-size=1280,4000", path.as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr.decode(errors="replace")[-2000:]
    assert _png_size(shot) == (1280, 4000)
    # a blank 1280x4000 page compresses to a few KB; charts, text and tables do not
    assert shot.stat().st_size > 100_000, shot.stat().st_size

    dom = _browser(exe, "--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    census = _SvgCensus()
    census.feed(dom.stdout.decode("utf-8"))
    drawn = [s for s in census.svgs if s["rect"] + s["path"] > 0]
    assert len(drawn) >= 12, census.svgs
    assert sum(1 for s in census.svgs if s["path"] > 0) >= 2, "line chart and Lorenz curve"
    assert all(s["rect"] >= 3 or s["path"] >= 1 for s in drawn)
    captions = [" ".join(c.split()) for c in census.captions]
    for title in CHART_TITLES:
        assert title in captions, title


def test_cli_report_writes_the_file(store, chdb_path, tmp_path):
    from poa_stream.cli_tools import report
    app = typer.Typer()
    app.command("report")(report)
    app.command("noop")(lambda: None)
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", "--store", str(chdb_path), "--database", DATABASE,
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text(encoding="utf-8") == render(store)


def test_docstring_examples():
    import doctest

    import poa_stream.report as report
    result = doctest.testmod(report)
    assert result.attempted >= 2 and result.failed == 0


def test_demand_integrity_watch_points_match_the_dashboard_panels(store):
    """The report's per-epoch usage concentration equals the dashboard panel's, and both agree
    with a count of paid usage per operator computed here from the ledger rows."""
    panel = next(p for _, p in g.all_panels() if p.title == "Demand integrity per epoch: usage concentration")
    store.use_database()
    _, rows = store.query(expand(panel.sql, TIME_FROM, TIME_TO, timedelta(hours=1)))
    db = store.database
    _, ops = store.query(f"SELECT epoch, account, count() FROM {db}.reward_ledger "
                         f"WHERE role = 'operator' AND source = 'fee' GROUP BY epoch, account")
    per: dict[int, list[int]] = {}
    for epoch, _, n in ops:
        per.setdefault(epoch, []).append(n)
    assert rows and len(rows) == len(per)
    for epoch, operators, hhi, top, pairs, pair_hhi, top_pair in rows:
        ns = per[epoch]
        assert operators == len(ns) and pairs > 0 and 0 < pair_hhi <= 1
        assert hhi == round(sum((n / sum(ns)) ** 2 for n in ns), 4)
        assert top == round(max(ns) / sum(ns), 4)


def test_wash_flags_in_the_report_and_the_dashboard_panel(chdb_path, tmp_path):
    """An attacker's fee-0 wash usage (poa/adversarial.py) replayed into a real chdb store:
    the dashboard panel and the report's section both list its operator with the reasons;
    the honest operator is in neither."""
    import json

    from poa_stream import adversarial as A
    from poa_stream.report import _wash_flags, Store
    from poa_stream.settings import Settings
    from poa_stream.processors.core import Core
    from poa_stream.processors.replay import replay
    from poa_stream.sinks.chdb_sink import ChdbSink
    pf = tmp_path / "policy.json"
    pf.write_text(json.dumps(A.policy_for("fee0", 1)))
    sink = ChdbSink(chdb_path, "wash_fee0")
    try:
        sink.ensure_schema()
        replay(A.world("fee0", 1, True, n_fake=600), Core(Settings(home=tmp_path / "home", policy_file=pf)), sink)
        panel = next(p for _, p in g.all_panels() if p.title == "Demand integrity per epoch: suspected wash usage")
        sink.use_database()
        _, rows = sink.query(expand(panel.sql, TIME_FROM, TIME_TO, timedelta(hours=1)))
        assert {(r[1], r[2]) for r in rows} == {("attacker-op", "wash_low_fee_burst"),
                                                ("attacker-op", "wash_closed_loop")}
        epochs = {r[0] for r in rows}
        assert len(epochs) == 2 and all(e > 20_000 for e in epochs)
        html = _wash_flags(Store(sink))
        assert html.count("<tr>") == len(rows) + 1 and "honest-operator" not in html
        assert "wash_closed_loop" in html and "attacker-op" in html
    finally:
        sink.command("USE default")
        sink.close()


def test_the_honest_seeded_scenario_raises_no_wash_flag(store):
    """Four honest operators over closed epochs: no operator looks like wash usage."""
    db = store.database
    assert store.scalar(f"SELECT count() FROM {db}.epochs") >= 2
    assert store.scalar(f"SELECT uniqExact(model_id) FROM {db}.usage") >= 4
    assert store.scalar(f"SELECT count() FROM {db}.flags WHERE reason LIKE 'wash_%'") == 0
