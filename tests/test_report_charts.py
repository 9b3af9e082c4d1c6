"""The HTML report holds up on awkward data: everything in one hour, an eleven-month gap,
worker metrics of one hour. Each chart is screenshot in headless Chromium at two widths
(1280 and 480 px) and must show marks (saturated pixels of the palette), never a blank
frame; time axes are proportional to time; quiet epochs are summarised; every chart with
axes names them."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from support.png import ink, read_png, unfilter

from poa_stream.report import render

DATABASE = "report_gap"
T0 = datetime(2026, 1, 1, 9, tzinfo=timezone.utc)
T1 = datetime(2026, 11, 30, 9, tzinfo=timezone.utc)


def _events() -> list[tuple[str, bytes]]:
    from support.events_factory import raw
    recs, n = [], 0

    def ev(topic, t, **o):
        nonlocal n
        n += 1
        recs.append((topic, raw({"event_id": f"g{n:04d}", "ts": t.strftime("%Y-%m-%dT%H:%M:%S.000Z"), **o})))
    texts = ["the river flows past the old mill and the children watch the boats go by in the morning",
             "a small garden behind the house grows beans tomatoes and herbs for the kitchen all summer",
             "the library opens at nine and closes at six except on sundays when it stays closed all day"]
    for day, t in enumerate((T0, T1)):
        for k, text in enumerate(texts):
            cid = f"c{day}{k}"
            ev("poa.contributions", t + timedelta(minutes=k), type="contribution", contribution_id=cid,
               contributor=f"author{k}", datanet="dn", kind="dataset", content=text + f" ({day})")
            for v in range(3):
                ev("poa.validations", t + timedelta(minutes=5 + v), type="validation", validator=f"val{v}",
                   contribution_id=cid, verdict="accept")
        ev("poa.models", t + timedelta(minutes=10), type="model", model_id=f"m{day}", operator="op",
           method="pretrain", datanets=[{"datanet": "dn", "weight": 1.0}])
        for k in range(6):
            ev("poa.usage", t + timedelta(minutes=20 + k), type="usage", model_id=f"m{day}", request_id=f"r{day}{k}",
               fee=100_000 + k, output=texts[k % 3])
    ev("poa.usage", T1 + timedelta(days=2), type="usage", model_id="m1", request_id="close", fee=1, output="x")
    recs.append(("poa.usage", b"{not json"))
    return recs


@pytest.fixture(scope="module")
def gap_html(chdb_path, tmp_path_factory):
    from poa_stream.settings import Settings
    from poa_stream.processors.core import Core
    from poa_stream.processors.replay import replay
    from poa_stream.sinks.chdb_sink import ChdbSink
    sink = ChdbSink(chdb_path, DATABASE)
    try:
        sink.ensure_schema()
        if not sink.scalar(f"SELECT count() FROM {DATABASE}.events"):
            home = tmp_path_factory.mktemp("gap")
            (home / "policy.json").write_text(json.dumps({"max_stream_jump_s": 400 * 86_400.0}))  # a quiet year is legal
            replay(_events(), Core(Settings(home=home, policy_file=home / "policy.json")), sink)
            # worker metrics of one hour only (a single point per series)
            sink.insert("pipeline_metrics", {
                "ts": [T1 + timedelta(minutes=m) for m in (1, 2)], "worker": ["w", "w"], "topic": ["poa.usage"] * 2,
                "messages": [40, 60], "deadlettered": [0, 1], "released": [40, 59], "buffered": [0, 0],
                "lag": [5, 9], "batch_ms": [3.0, 4.0], "e2l_p50_ms": [10.0, 12.0], "e2l_p99_ms": [30.0, 44.0],
                "e2l_max_ms": [50.0, 60.0]})
        yield render(sink)
    finally:
        sink.command("USE default")
        sink.close()


def test_quiet_epochs_are_one_row_and_time_axes_show_the_gap(gap_html):
    html = gap_html
    assert "epochs without usage" in html
    n_rows = len(re.findall(r"<tr>", html.split("Rewards from usage vs emissions per epoch")[1].split("</table>")[0]))
    assert n_rows <= 8, n_rows  # not ~330 rows of empty epochs
    assert len(html) < 400_000
    svg = re.search(r'<svg[^>]*aria-label="Demand vs incentive activity per hour".*?</svg>', html, re.S).group(0)
    xs = sorted({float(x) for x in re.findall(r'<circle cx="([0-9.]+)"', svg)})
    left, right = xs[0], xs[-1]
    gaps = np.diff(xs)
    assert gaps.max() >= 0.8 * (right - left), xs  # eleven months are most of the axis, not one step
    # the two bursts are not joined by a line across the gap
    d = re.search(r'<path d="([^"]+)"', svg).group(1)
    assert d.count("M") >= 2
    assert "time (UTC)" in svg and "events per hour" in svg


def test_pipeline_charts_one_quantity_each_and_drawn_with_one_hour_of_data(gap_html):
    for title, unit in (("Worker throughput per hour", "messages per hour"),
                        ("Consumer lag per hour (max)", "messages behind"),
                        ("Event-to-ledger latency per hour (p99)", "milliseconds")):
        svg = re.search(rf'<svg[^>]*aria-label="{re.escape(title)}".*?</svg>', gap_html, re.S).group(0)
        assert unit in svg and len(re.findall(r"<circle ", svg)) == 1, title  # one point, drawn as a marker
    assert 'aria-label="Dead letters by topic"' in gap_html and 'aria-label="Dead letters by reason"' in gap_html


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        import os
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed")
    return exe


SLOT = 520  # px per chart on the screenshot page


@pytest.mark.parametrize("width", [1280, 480])
def test_no_chart_is_blank_in_chromium(gap_html, tmp_path, width):
    exe = _chromium()
    svgs = re.findall(r"<svg .*?</svg>", gap_html, re.S)
    assert len(svgs) >= 15
    css = re.search(r"<style>(.*?)</style>", gap_html, re.S).group(1)
    page = tmp_path / "charts.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><style>" + css +
                    f"body{{margin:0;background:#fff}}.c{{height:{SLOT}px;overflow:hidden;width:{width - 20}px}}"
                    "</style></head><body>" + "".join(f'<div class="c">{s}</div>' for s in svgs) + "</body></html>")
    shot = tmp_path / f"charts-{width}.png"
    height = SLOT * len(svgs)
    res = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                          f"--window-size={width},{height}", page.as_uri()], capture_output=True, timeout=180)
    assert res.returncode == 0 and shot.exists(), res.stderr.decode(errors="replace")[-2000:]
    px = read_png(shot)
    assert px.shape[1] == width
    marks = ink(px)
    labels = [re.search(r'aria-label="([^"]*)"', s).group(1) for s in svgs]
    for i, label in enumerate(labels):
        region = marks[i * SLOT:(i + 1) * SLOT]
        if "no rows" in svgs[i]:
            continue  # an empty table says so in words ("no rows"), not as a blank frame
        assert region.sum() >= 20, f"{label!r} is blank at {width} px"
    shutil.copy(shot, tmp_path.parent / shot.name)  # kept next to the test's tmp dir for a look


def test_png_unfilter_matches_a_python_reference():
    rng = np.random.default_rng(3)
    h, w, bpp = 5, 7, 3
    raw = bytearray()
    for y in range(h):
        raw.append(int(rng.integers(0, 5)))
        raw += bytes(rng.integers(0, 256, w * bpp, dtype=np.uint8))
    raw_a = np.frombuffer(bytes(raw), dtype=np.uint8)

    def ref():
        out = [[0] * (w * bpp) for _ in range(h)]
        pos = 0
        for y in range(h):
            ft = raw[pos]
            pos += 1
            for x in range(w * bpp):
                a = out[y][x - bpp] if x >= bpp else 0
                b = out[y - 1][x] if y else 0
                c = out[y - 1][x - bpp] if (x >= bpp and y) else 0
                p = a + b - c
                pr = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else (b if abs(p - b) <= abs(p - c) else c)
                v = raw[pos + x] + (0, a, b, (a + b) // 2, pr)[ft]
                out[y][x] = v & 255
            pos += w * bpp
        return np.array(out, dtype=np.uint8)
    assert (unfilter(raw_a, h, w * bpp, bpp) == ref()).all()
    assert (unfilter.py_func(raw_a, h, w * bpp, bpp) == ref()).all()
