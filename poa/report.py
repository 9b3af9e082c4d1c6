"""``poa report``: one self-contained HTML file with the key charts and tables of the dashboards.

Contract: :func:`write_report(sink, out_path)` queries the store behind ``sink`` (tables
qualified with ``sink.database``), renders one HTML file and returns its path. The file
needs nothing else to open: CSS inline, charts as inline SVG drawn here in Python, no
scripts, fonts or images from anywhere. The same store gives the same bytes (every query
has a total order; no wall-clock time in the output). Money is shown in tokens
(micro-units / 1e6).

Sections follow the Grafana dashboards (poa/grafana.py): network economics (fees vs
emissions per epoch, demand vs incentive activity, rewards by role, top earners,
concentration with a Lorenz curve), attribution (by datanet and model, share passed up
model lineage, evidence mix, usage with no evidence), spam and validators (flags by
reason, duplicate clusters, validator reliability ranking, spam approved), pipeline
(dead letters by topic and by reason; worker throughput, lag and latency, each on its own
axis, when the store has them). Time axes are proportional to time and show gaps; runs of
epochs without entries are summarised as one row.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path

from poa_stream.grafana import CLUSTER_REASONS, NO_EVIDENCE, SPAM_STATUSES  # SQL fragments shared with the panels

PALETTE = ("#3b6fd4", "#e8833a", "#3fa65a", "#c94f6d", "#8a63d2", "#2aa1a8", "#b08d2a", "#6c757d")


# ---------------------------------------------------------------- formatting
def fmt_num(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    return str(v)


def fmt_pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _e(v) -> str:
    return escape(str(v), quote=True)


# ---------------------------------------------------------------- SVG charts
def _svg(w: int, h: int, body: str, label: str, max_w: int | None = None) -> str:
    """An inline SVG that scales down with the page and up to ``max_w`` pixels wide."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" '
            f'style="max-width:{max_w or int(w * 1.3)}px" role="img" aria-label="{_e(label)}">{body}</svg>')


def _legend(names: list[str], x: int, y: int) -> str:
    out, cx = [], x
    for i, name in enumerate(names):
        out.append(f'<rect x="{cx}" y="{y - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{cx + 14}" y="{y}" class="lg">{_e(name)}</text>')
        cx += 24 + 7 * len(name)
    return "".join(out)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** len(str(int(v))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if v <= step * mag:
            return step * mag
    return 10 * mag


def _axis_titles(w: int, h: int, left: int, bottom: int, x_title: str, y_title: str) -> str:
    out = ""
    if x_title:
        out += f'<text x="{left + (w - left) / 2:.0f}" y="{h - bottom + 32}" class="xt at">{_e(x_title)}</text>'
    if y_title:
        out += (f'<text x="14" y="{(h - bottom) / 2 + 10:.0f}" class="xt at" '
                f'transform="rotate(-90 14 {(h - bottom) / 2 + 10:.0f})">{_e(y_title)}</text>')
    return out


def bar_chart(title: str, categories: list[str], series: list[tuple[str, list[float]]],
              stacked: bool = False, unit: str = "", y_title: str = "", x_title: str = "") -> str:
    """Vertical bars: one group (or stack) per category, one colour per series; axis titles
    name the quantity and its unit."""
    w, h, left, bottom, top = 720, 310, 78, 70, 30
    n = max(len(categories), 1)
    totals = [sum(s[1][i] for s in series) if stacked else max((s[1][i] for s in series), default=0)
              for i in range(len(categories))]
    ymax = _nice_max(max(totals, default=0))
    ph = h - top - bottom
    slot = (w - left - 10) / n
    parts = [f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" class="ax"/>']
    for k in range(5):
        v = ymax * k / 4
        y = h - bottom - ph * k / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - 10}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" class="yt">{_e(fmt_num(v, 1))}</text>')
    for i, cat in enumerate(categories):
        x0 = left + slot * i + slot * 0.15
        bw = slot * 0.7 if stacked else slot * 0.7 / max(len(series), 1)
        base = 0.0
        for j, (name, values) in enumerate(series):
            v = values[i] or 0
            bh = ph * v / ymax
            x = x0 if stacked else x0 + j * bw
            y = h - bottom - (base + bh if stacked else bh)
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{bh:.1f}" '
                         f'fill="{PALETTE[j % len(PALETTE)]}"><title>{_e(cat)} — {_e(name)}: '
                         f'{_e(fmt_num(v))}{_e(unit)}</title></rect>')
            if stacked:
                base += bh
        parts.append(f'<text x="{left + slot * (i + 0.5):.1f}" y="{h - bottom + 16}" class="xt">'
                     f'{_e(cat[:22])}</text>')
    parts.append(_legend([s[0] for s in series], left, h - 12))
    parts.append(_axis_titles(w, h, left, bottom, x_title, y_title))
    return _svg(w, h, "".join(parts), title)


def hbar_chart(title: str, labels: list[str], values: list[float], fmt=fmt_num,
               color: str = PALETTE[0]) -> str:
    """Horizontal ranking bars with the value printed at each bar's end."""
    row, left, w = 24, 190, 720
    h = max(row * len(labels) + 20, 44)
    vmax = max((v or 0 for v in values), default=0) or 1
    parts = []
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = 10 + i * row
        bw = (w - left - 110) * (v or 0) / vmax
        parts.append(f'<text x="{left - 8}" y="{y + 15}" class="yl">{_e(str(label)[:28])}</text>'
                     f'<rect x="{left}" y="{y + 3}" width="{bw:.1f}" height="{row - 8}" fill="{color}">'
                     f'<title>{_e(label)}: {_e(fmt(v))}</title></rect>'
                     f'<text x="{left + bw + 6:.1f}" y="{y + 15}" class="vl">{_e(fmt(v))}</text>')
    if not labels:
        parts.append('<text x="10" y="26" class="vl">no rows</text>')
    return _svg(w, h, "".join(parts), title)


def line_chart(title: str, xs: list[datetime], series: list[tuple[str, list[float]]], y_title: str = "",
               x_title: str = "time (UTC)", gap_factor: float = 3.0) -> str:
    """Lines over time on a shared y axis from zero. x is proportional to time (a quiet
    month is a long stretch, not one step); consecutive points further apart than
    ``gap_factor`` times the usual spacing are not joined (the gap shows); every point also
    gets a marker, so a series of one point (data within one hour) is still drawn. The
    usual spacing is the smallest one (the bucket width)."""
    w, h, left, bottom, top = 720, 300, 70, 66, 20
    ymax = _nice_max(max((v or 0 for _, vs in series for v in vs), default=0))
    pw, ph = w - left - 20, h - top - bottom
    parts = [f'<line x1="{left}" y1="{h - bottom}" x2="{w - 20}" y2="{h - bottom}" class="ax"/>']
    for k in range(5):
        y = h - bottom - ph * k / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - 20}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" class="yt">{_e(fmt_num(ymax * k / 4, 1))}</text>')
    if xs:
        t0, t1 = xs[0].timestamp(), xs[-1].timestamp()
        span = (t1 - t0) or 1.0
        single = t1 == t0

        def X(t: datetime) -> float:
            return left + pw / 2 if single else left + pw * (t.timestamp() - t0) / span
        fmt = "%Y-%m-%d" if span > 10 * 86_400 else "%m-%d %H:%M"
        for k in range(1 if single else 5):  # ticks at even times, not at even indices
            t = datetime.fromtimestamp(t0 + span * k / 4, tz=xs[0].tzinfo) if not single else xs[0]
            x = X(t)
            anchor = "" if single or 0 < k < 4 else (' style="text-anchor:start"' if k == 0 else ' style="text-anchor:end"')
            parts.append(f'<line x1="{x:.1f}" y1="{h - bottom}" x2="{x:.1f}" y2="{h - bottom + 4}" class="ax"/>'
                         f'<text x="{x:.1f}" y="{h - bottom + 16}" class="xt"{anchor}>{_e(t.strftime(fmt))}</text>')
        steps = [b.timestamp() - a.timestamp() for a, b in zip(xs, xs[1:])]
        usual = min((d for d in steps if d > 0), default=0.0)  # the buckets' width (an hour)
        for j, (name, vs) in enumerate(series):
            color = PALETTE[j % len(PALETTE)]
            d, prev = [], None
            for t, v in zip(xs, vs):
                x, y = X(t), h - bottom - ph * (v or 0) / ymax
                joined = prev is not None and (t.timestamp() - prev.timestamp()) <= gap_factor * usual
                d.append(f"{'L' if joined else 'M'}{x:.1f},{y:.1f}")
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"><title>{_e(name)} '
                             f'{_e(t.strftime("%Y-%m-%d %H:%M"))}: {_e(fmt_num(v))}</title></circle>')
                prev = t
            parts.append(f'<path d="{" ".join(d)}" fill="none" stroke="{color}" stroke-width="2">'
                         f'<title>{_e(name)}</title></path>')
    else:
        parts.append(f'<text x="{left + 10}" y="{top + 20}" class="vl">no rows</text>')
    parts.append(_legend([s[0] for s in series], left, h - 8))
    parts.append(_axis_titles(w, h, left, bottom, x_title, y_title))
    return _svg(w, h, "".join(parts), title)


def lorenz_chart(title: str, totals: list[float]) -> str:
    """Lorenz curve of ``totals`` (cumulative share of rewards vs share of earners)."""
    size, pad = 300, 40
    xs = sorted(v for v in totals if v > 0)
    s, acc, pts = sum(xs) or 1, 0.0, [(0.0, 0.0)]
    for i, v in enumerate(xs, 1):
        acc += v
        pts.append((i / len(xs), acc / s))
    side = size - 2 * pad
    to_xy = lambda p: (pad + side * p[0], size - pad - side * p[1])  # noqa: E731
    curve = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(map(to_xy, pts)))
    body = (f'<rect x="{pad}" y="{pad}" width="{side}" height="{side}" class="frame"/>'
            f'<path d="M{pad},{size - pad} L{size - pad},{pad}" class="diag"/>'
            f'<path d="{curve}" fill="none" stroke="{PALETTE[1]}" stroke-width="2.5"><title>Lorenz curve</title></path>'
            f'<text x="{size / 2}" y="{size - 10}" class="xt">share of earners</text>'
            f'<text x="12" y="{size / 2}" class="xt" transform="rotate(-90 12 {size / 2})">share of rewards</text>')
    return _svg(size, size, body, title, max_w=size)


def table(headers: list[str], rows: list[tuple], fmts: dict[int, object] | None = None) -> str:
    fmts = fmts or {}
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(
        f'<td class="{"n" if isinstance(v, (int, float)) else "t"}">{_e(fmts.get(i, fmt_num)(v))}</td>'
        for i, v in enumerate(r)) + "</tr>" for r in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" class="t">no rows</td></tr>'
    return f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def figure(title: str, content: str, note: str = "") -> str:
    note_html = f'<p class="note">{_e(note)}</p>' if note else ""
    return f'<figure><figcaption>{_e(title)}</figcaption>{content}{note_html}</figure>'


def stats(items: list[tuple[str, str]]) -> str:
    return '<div class="stats">' + "".join(
        f'<div class="stat"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>'
        for k, v in items) + "</div>"


# ---------------------------------------------------------------- data
@dataclass
class Store:
    sink: object

    def rows(self, sql: str) -> list[tuple]:
        return self.sink.query(sql.replace("{db}", self.sink.database))[1]

    def one(self, sql: str) -> tuple:
        r = self.rows(sql)
        return r[0] if r else ()


def _economics(st: Store) -> str:
    epochs = st.rows("SELECT epoch, argMax(start, seq), argMax(budget, seq), argMax(fee_rewards, seq) / 1e6, "
                     "argMax(emission_rewards, seq) / 1e6, argMax(entries, seq), argMax(merkle_root, seq) "
                     "FROM {db}.epochs GROUP BY epoch ORDER BY epoch")
    hourly = st.rows("""
        SELECT h, sum(paid), sum(contrib), sum(votes) FROM (
            SELECT toDateTime64(toStartOfHour(ts), 3, 'UTC') AS h, count() AS paid, 0 AS contrib, 0 AS votes
            FROM {db}.usage WHERE fee > 0 GROUP BY h
            UNION ALL SELECT toDateTime64(toStartOfHour(ts), 3, 'UTC'), 0, count(), 0
            FROM {db}.contributions FINAL GROUP BY 1
            UNION ALL SELECT toDateTime64(toStartOfHour(ts), 3, 'UTC'), 0, 0, count()
            FROM {db}.validations GROUP BY 1)
        GROUP BY h ORDER BY h""")
    # fee-funded = fee credits + pool settlements + escrow releases (all paid by usage); the
    # pool and escrow roles' own rows are balances in transit (credits in, settlement or
    # release out), not anybody's reward
    roles = st.rows("SELECT role, sumIf(amount, source IN ('fee', 'pool', 'escrow')) / 1e6, "
                    "sumIf(amount, source = 'emission') / 1e6, sumIf(amount, source = 'pool') / 1e6 "
                    "FROM {db}.reward_ledger WHERE role NOT IN ('pool', 'escrow') GROUP BY role ORDER BY role")
    top = st.rows("SELECT account, arrayStringConcat(arraySort(groupUniqArray(toString(role))), ', '), "
                  "sumIf(amount, source IN ('fee', 'pool', 'escrow')) / 1e6, sumIf(amount, source = 'emission') / 1e6, "
                  "sum(amount) / 1e6 AS t, sumIf(amount, source = 'pool') / 1e6 FROM {db}.reward_ledger "
                  "WHERE role NOT IN ('pool', 'escrow') GROUP BY account ORDER BY t DESC, account LIMIT 15")
    pools = st.one("SELECT sumIf(amount, source = 'pool' AND role != 'pool') / 1e6, "
                   "sumIf(amount, role = 'pool') / 1e6, sumIf(amount, role = 'escrow') / 1e6, "
                   "sumIf(amount, source = 'escrow' AND role = 'pool') / 1e6 "
                   "FROM {db}.reward_ledger") or (0.0, 0.0, 0.0, 0.0)
    contrib = [r[0] for r in st.rows("SELECT sum(amount) / 1e6 AS t FROM {db}.reward_ledger WHERE role = 'contributor' "
                                     "GROUP BY account HAVING t > 0 ORDER BY t, any(account)")]
    gini, hhi, top10 = concentration(contrib)
    fee_total = sum(r[1] for r in roles)
    emission_total = sum(r[2] for r in roles)
    both = fee_total + emission_total
    out = [stats([("fee-funded credits (tokens)", fmt_num(fee_total)),
                  ("of which settled from datanet pools", fmt_num(pools[0])),
                  ("pool balance carried (tokens)", fmt_num(pools[1])),
                  ("held in escrow, not yet accepted (tokens)", fmt_num(pools[2])),
                  ("forfeited from escrow to pools (tokens)", fmt_num(pools[3])),
                  ("emission-funded credits (tokens)", fmt_num(emission_total)),
                  ("usage-funded share", fmt_pct(fee_total / both if both else None))])]
    shown = quiet_runs(epochs)
    cats = [c for c, _ in shown]
    out.append(figure("Rewards from usage vs emissions per epoch", bar_chart(
        "Rewards from usage vs emissions per epoch", cats,
        [("fee-funded (tokens)", [r[3] for _, r in shown]),
         ("emission-funded (tokens)", [r[4] for _, r in shown])],
        y_title="tokens", x_title="epoch (start date, UTC)"),
        "Fee-funded credits come from paid inference (real demand); emission-funded ones from the "
        "epoch's token budget (incentives). A run of three or more epochs without usage is one bar "
        "(its sums)."))
    out.append(table(["epoch", "start", "budget (tokens)", "fee-funded", "emission-funded", "entries", "Merkle root"],
                     [(r[0], r[1], r[2] / 1e6, r[3], r[4], r[5], r[6][:16] + "…" if r[6] else "")
                      for _, r in shown], {0: str}))
    out.append(figure("Demand vs incentive activity per hour", line_chart(
        "Demand vs incentive activity per hour", [r[0] for r in hourly],
        [("paid inference (demand)", [r[1] for r in hourly]), ("contributions (incentive)", [r[2] for r in hourly]),
         ("validations (incentive)", [r[3] for r in hourly])], y_title="events per hour")))
    out.append(figure("Rewards by role", bar_chart(
        "Rewards by role", [r[0] for r in roles],
        [("fee-funded (tokens)", [r[1] for r in roles]), ("emission-funded (tokens)", [r[2] for r in roles])],
        stacked=True, y_title="tokens", x_title="role")))
    out.append(figure("Top earners", hbar_chart("Top earners", [r[0] for r in top[:10]], [r[4] for r in top[:10]])
                      + table(["account", "roles", "fee-funded", "emission-funded", "total (tokens)",
                               "of which from pools"], top)))
    out.append(figure("Concentration of contributor rewards",
                      stats([("Gini", fmt_num(gini, 3)), ("HHI", fmt_num(hhi, 3)), ("top-10 share", fmt_pct(top10)),
                             ("contributors paid", fmt_num(len(contrib)))])
                      + lorenz_chart("Lorenz curve of contributor rewards", contrib),
                      "Gini: 0 = everyone earns the same, 1 = one account earns everything. "
                      "HHI: sum of squared shares."))
    out.append(_demand_integrity(st))
    return _section("Network economics", out)


def quiet_runs(epochs: list[tuple]) -> list[tuple[str, tuple]]:
    """Epoch rows ``(epoch, start, budget µ, fee tokens, emission tokens, entries, root)`` for
    a chart or table as ``(label, row)``: a run of 3+ consecutive epochs without usage (no
    fee-funded credit) becomes one row labelled ``"start–end"`` (its start column says
    ``"start–end: N epochs without usage"``) with
    the run's sums (emissions go on), so a quiet year is one line, not hundreds."""
    out: list[tuple[str, tuple]] = []
    run: list[tuple] = []

    def flush() -> None:
        if len(run) >= 3:
            label = f"{run[0][1]:%Y-%m-%d}–{run[-1][1]:%Y-%m-%d}"
            out.append((label, (f"{run[0][0]}–{run[-1][0]}", f"{label}: {len(run)} epochs without usage", sum(r[2] for r in run), 0.0,
                                sum(r[4] for r in run), sum(r[5] for r in run), "")))
        else:
            out.extend((r[1].strftime("%Y-%m-%d"), r) for r in run)
        run.clear()
    for r in epochs:
        if not r[3]:
            run.append(r)
            continue
        flush()
        out.append((r[1].strftime("%Y-%m-%d"), r))
    flush()
    return out


def _demand_integrity(st: Store) -> str:
    """Watch points per epoch: who funds contributors, and how concentrated paid usage is
    (the same queries as the economics dashboard's "Demand integrity" panels)."""
    funding = st.rows("""
        SELECT epoch,
               sumIf(amount, role = 'contributor' AND source IN ('fee', 'pool', 'escrow')) / 1e6 AS f,
               sumIf(amount, role = 'contributor' AND source = 'emission') / 1e6 AS e,
               f / nullIf(f + e, 0),
               least(1, sumIf(amount, source = 'fee') / nullIf(sumIf(amount, source = 'emission'), 0))
        FROM {db}.reward_ledger GROUP BY epoch ORDER BY epoch""")
    conc = st.rows("""
        SELECT epoch, count(), sum(pow(n / total, 2)), max(n) / any(total)
        FROM (SELECT epoch, account, count() AS n, sum(count()) OVER (PARTITION BY epoch) AS total
              FROM {db}.reward_ledger WHERE role = 'operator' AND source = 'fee' GROUP BY epoch, account)
        GROUP BY epoch ORDER BY epoch""")
    pairs = {r[0]: r[1:] for r in st.rows("""
        SELECT epoch, count(), sum(pow(amount / total, 2)), max(amount) / any(total)
        FROM (SELECT epoch, amount, sum(amount) OVER (PARTITION BY epoch) AS total
              FROM (SELECT op.epoch AS epoch, op.account AS operator, c.account AS contributor,
                           toFloat64(sum(c.amount)) AS amount
                    FROM {db}.reward_ledger AS op
                    INNER JOIN {db}.reward_ledger AS c ON c.ref_event_id = op.ref_event_id
                    WHERE op.role = 'operator' AND op.source = 'fee' AND c.role = 'contributor' AND c.source = 'fee'
                    GROUP BY epoch, operator, contributor))
        GROUP BY epoch""")}
    rows = [(r[0], r[1], r[2], fmt_pct(r[3]), *pairs.get(r[0], (None, None, None))) for r in conc]
    return _demand_figure(funding, rows) + _wash_flags(st)


def _wash_flags(st: Store) -> str:
    """Suspected wash usage (processors/wash.py): the economics dashboard's panel."""
    flags = st.rows("""
        SELECT toUInt64OrZero(extract(detail, '^epoch ([0-9]+):')) AS epoch, contributor,
               toString(reason), score, detail
        FROM {db}.flags WHERE reason LIKE 'wash_%'
        ORDER BY epoch DESC, score DESC, contributor, reason LIMIT 200""")
    return figure("Suspected wash usage per epoch",
                  table(["epoch", "operator", "reason", "score", "detail"], flags,
                        {0: str, 3: lambda v: fmt_num(v, 3)}),
                  "Flags, not verdicts: they move no money. wash_self_dealing: the operator's usage "
                  "credits its own account or one with its signing key; wash_low_fee_burst: fee-0 or "
                  "near-0 usage in a burst; wash_closed_loop: its usage credits mostly a few accounts "
                  "that no other operator's usage credits.")


def _demand_figure(funding: list[tuple], rows: list[tuple]) -> str:
    return figure("Demand integrity per epoch",
                  table(["epoch", "contributor credits from fees (tokens)", "from emissions (tokens)",
                         "fee-funded share", "emission matched by fees"],
                        [(r[0], r[1], r[2], fmt_pct(r[3]), fmt_pct(r[4])) for r in funding], {0: str})
                  + table(["epoch", "paying operators", "operator HHI", "top operator share",
                           "(operator, contributor) pairs", "pair HHI", "top pair share"],
                          [(r[0], r[1], r[2], r[3], r[4], r[5], fmt_pct(r[6]) if r[6] is not None else "")
                           for r in rows], {0: str}),
                  "Emissions follow validated supply, never usage, so reporting usage cannot pay "
                  "(README: Economics). Watch the fee-funded share (real demand) and the "
                  "concentration of paid usage: one operator paying mostly one contributor is the "
                  "shape of wash usage.")


def concentration(totals: list[float]) -> tuple[float | None, float | None, float | None]:
    """(Gini, Herfindahl-Hirschman index, share of the ten largest) of positive totals.

    >>> concentration([1.0, 1.0, 1.0, 1.0])
    (0.0, 0.25, 1.0)
    >>> [round(x, 3) for x in concentration([0.0, 0.0, 0.0, 10.0])]
    [0.0, 1.0, 1.0]
    """
    xs = sorted(v for v in totals if v > 0)
    if not xs:
        return None, None, None
    n, s = len(xs), sum(xs)
    gini = 2 * sum(i * x for i, x in enumerate(xs, 1)) / (n * s) - (n + 1) / n
    hhi = sum((x / s) ** 2 for x in xs)
    top10 = sum(xs[-10:]) / s
    return round(gini, 12), round(hhi, 12), round(top10, 12)


def _attribution(st: Store) -> str:
    def share_by(col: str) -> list[tuple]:
        return st.rows(f"SELECT {col}, sum(weight) AS w, sum(weight) / sum(sum(weight)) OVER () "
                       f"FROM {{db}}.attributions GROUP BY {col} ORDER BY w DESC, {col}")
    datanets, models = share_by("datanet"), share_by("model_id")
    lineage = st.rows("""
        SELECT m.model_id, m.method, arrayStringConcat(m.base_models, ', '), m.inherit, count(),
               avg(u.lineage_share), sum(u.fee) / 1e6
        FROM {db}.usage AS u INNER JOIN (SELECT model_id, method, base_models, inherit FROM {db}.models FINAL) AS m
            ON u.model_id = m.model_id
        GROUP BY m.model_id, m.method, m.base_models, m.inherit ORDER BY m.model_id""")
    evidence = st.rows("SELECT evidence, count() AS n FROM {db}.usage GROUP BY evidence ORDER BY n DESC, evidence")
    by_model = st.rows("SELECT model_id, count(), countIf(evidence = 'span'), countIf(evidence = 'span+influence'), "
                       "countIf(evidence = 'influence'), countIf(evidence = 'mixed'), countIf(evidence = 'pool'), "
                       "countIf(evidence = 'none') FROM {db}.usage GROUP BY model_id ORDER BY model_id")
    none_n, none_share, none_fee = st.one(
        f"SELECT countIf(evidence IN {NO_EVIDENCE}), countIf(evidence IN {NO_EVIDENCE}) / nullIf(count(), 0), "
        f"sumIf(fee, evidence IN {NO_EVIDENCE}) / 1e6 FROM {{db}}.usage") or (0, None, 0.0)
    derived = [r for r in lineage if r[2]]
    out = [
        figure("Attributed share by datanet", hbar_chart("Attributed share by datanet", [r[0] for r in datanets],
                                                         [r[2] for r in datanets], fmt_pct)),
        figure("Attributed share by model", hbar_chart("Attributed share by model", [r[0] for r in models],
                                                       [r[2] for r in models], fmt_pct, PALETTE[2])),
        figure("Attribution across derived and fine-tuned models: share passed up the lineage",
               hbar_chart("Share passed up the lineage", [r[0] for r in derived], [r[5] for r in derived],
                          fmt_pct, PALETTE[4])
               + table(["model", "method", "base models", "inherit", "requests", "passed up", "fees (tokens)"],
                       lineage, {5: fmt_pct}),
               "Share of each request's attribution credited through an ancestor model's datanets."),
        figure("Evidence mix", hbar_chart("Evidence mix", [r[0] for r in evidence], [r[1] for r in evidence],
                                          color=PALETTE[5])
               + table(["model", "requests", "span", "span+influence", "influence", "mixed", "pool", "none"],
                       by_model)),
        figure("Usage with no evidence", stats([("requests without evidence", fmt_num(none_n)),
                                                ("share of requests", fmt_pct(none_share)),
                                                ("their fees (tokens)", fmt_num(none_fee))]),
               "No matched span and no influence scores: the contributor and validator share went to "
               "the lineage's datanet pools, settled at epoch close over their eligible "
               "contributions (or to the treasury when nothing was eligible)."),
    ]
    return _section("Attribution", out)


def _spam(st: Store) -> str:
    flags = st.rows("SELECT reason, count() AS n, uniqExact(contributor), avg(score) FROM {db}.flags "
                    "GROUP BY reason ORDER BY n DESC, reason")
    clusters = st.rows(f"""
        SELECT f.reason, if(c.duplicate_of != '', c.duplicate_of, f.contribution_id) AS root, any(c.datanet),
               count() AS members, uniqExact(f.contributor) AS accounts,
               dateDiff('second', min(f.ts), max(f.ts))
        FROM {{db}}.flags AS f
        LEFT JOIN (SELECT contribution_id, duplicate_of, datanet FROM {{db}}.contributions FINAL) AS c
            ON f.contribution_id = c.contribution_id
        WHERE {CLUSTER_REASONS}
        GROUP BY f.reason, root ORDER BY members DESC, accounts DESC, root LIMIT 12""")
    validators = st.rows(f"""
        SELECT r.validator, r.reliability, r.votes, ifNull(s.on_spam, 0), ifNull(s.approved, 0)
        FROM (SELECT validator, argMax(reliability, ts) AS reliability, argMax(votes, ts) AS votes
              FROM {{db}}.validator_scores GROUP BY validator) AS r
        LEFT JOIN (SELECT v.validator AS validator, count() AS on_spam, countIf(v.verdict = 'accept') AS approved
                   FROM {{db}}.validations AS v
                   INNER JOIN (SELECT contribution_id FROM {{db}}.contributions FINAL WHERE status IN {SPAM_STATUSES}
                               UNION DISTINCT SELECT contribution_id FROM {{db}}.flags
                               WHERE reason NOT LIKE 'validator_%') AS s
                       ON v.contribution_id = s.contribution_id
                   GROUP BY v.validator) AS s ON r.validator = s.validator
        ORDER BY r.reliability DESC, r.validator""")
    flagged = st.rows("SELECT contributor, reason, count() AS n, argMax(detail, ts) FROM {db}.flags "
                      "WHERE reason LIKE 'validator_%' GROUP BY contributor, reason ORDER BY n DESC, contributor, reason")
    approvers = sorted((r for r in validators if r[4]), key=lambda r: (-r[4], r[0]))
    out = [
        figure("Flags by reason", hbar_chart("Flags by reason", [r[0] for r in flags], [r[1] for r in flags],
                                             color=PALETTE[3])
               + table(["reason", "flags", "accounts", "mean score"], flags, {3: lambda v: fmt_num(v, 3)})),
        figure("Duplicate and farm clusters", table(
            ["reason", "cluster (earliest)", "datanet", "members", "accounts", "spread (s)"], clusters),
            "Flagged contributions grouped by the earliest contribution they copy; many accounts "
            "within a short spread point to a farm."),
        figure("Validator reliability ranking", hbar_chart(
            "Validator reliability ranking", [r[0] for r in validators], [r[1] for r in validators], fmt_pct,
            PALETTE[2])),
        figure("Validator effectiveness against spam: spam approved by validators", hbar_chart(
            "Spam approved by validators", [r[0] for r in approvers], [r[4] for r in approvers], color=PALETTE[3])
            + table(["validator", "reliability", "votes", "votes on spam", "spam approved"], validators,
                    {1: fmt_pct}),
            "Votes on contributions that ended duplicate, spam or rejected, or were flagged: "
            "an 'accept' there let spam through."),
        figure("Flagged validators", table(["validator", "reason", "flags", "latest detail"], flagged),
               "Flags the pipeline raises about validators (reasons validator_*)."),
    ]
    return _section("Spam and validators", out)


def _pipeline(st: Store) -> str:
    dead = st.rows("SELECT topic, reason, count() AS n FROM {db}.deadletter GROUP BY topic, reason "
                   "ORDER BY n DESC, topic, reason")
    by_topic = st.rows("SELECT topic, count() AS n FROM {db}.deadletter GROUP BY topic ORDER BY n DESC, topic")
    by_reason = st.rows("SELECT substring(reason, 1, 60) AS r, count() AS n FROM {db}.deadletter GROUP BY r "
                        "ORDER BY n DESC, r LIMIT 12")
    metrics = st.rows("SELECT toDateTime64(toStartOfHour(ts), 3, 'UTC') AS h, sum(messages), max(lag), max(e2l_p99_ms) "
                      "FROM {db}.pipeline_metrics GROUP BY h ORDER BY h")
    out = [figure("Dead letters by topic", hbar_chart("Dead letters by topic", [r[0] for r in by_topic],
                                                      [r[1] for r in by_topic], color=PALETTE[6])),
           figure("Dead letters by reason", hbar_chart("Dead letters by reason", [r[0] for r in by_reason],
                                                       [r[1] for r in by_reason], color=PALETTE[3])
                  + table(["topic", "reason", "dead letters"], [(t, r[:160], n) for t, r, n in dead]))]
    if metrics:  # one quantity per chart: counts, lag and milliseconds do not share an axis
        xs = [r[0] for r in metrics]
        out.append(figure("Worker throughput per hour", line_chart(
            "Worker throughput per hour", xs, [("messages processed", [r[1] for r in metrics])],
            y_title="messages per hour")))
        out.append(figure("Consumer lag per hour (max)", line_chart(
            "Consumer lag per hour (max)", xs, [("max lag", [r[2] for r in metrics])], y_title="messages behind")))
        out.append(figure("Event-to-ledger latency per hour (p99)", line_chart(
            "Event-to-ledger latency per hour (p99)", xs, [("p99 event-to-ledger", [r[3] for r in metrics])],
            y_title="milliseconds")))
    else:
        out.append('<p class="note">No worker metrics in this store (pipeline_metrics is written by '
                   '<code>poa worker</code>, not by <code>poa replay</code>).</p>')
    return _section("Pipeline", out)


def _section(title: str, parts: list[str]) -> str:
    return f'<section><h2>{_e(title)}</h2>{"".join(parts)}</section>'


CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:20px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c5cad6}main{max-width:1180px;margin:0 auto;padding:12px 24px 40px}
section{background:#fff;border-radius:8px;padding:8px 20px 16px;margin:16px 0;box-shadow:0 1px 2px #0001}
h2{font-size:18px;border-bottom:1px solid #e3e6ec;padding-bottom:6px}
figure{margin:18px 0}figcaption{font-weight:600;margin-bottom:6px}
.note{color:#5b6475;font-size:12.5px;margin:4px 0}
table{border-collapse:collapse;width:100%;margin:8px 0;font-size:12.5px}
th,td{border-bottom:1px solid #e8eaef;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f0f2f6}.stats{display:flex;flex-wrap:wrap;gap:12px;margin:10px 0}
.stat{background:#f0f2f6;border-radius:6px;padding:8px 14px;min-width:150px}.stat .v{font-size:20px;font-weight:600}
.stat .k{font-size:12px;color:#5b6475}
svg text{font:11px system-ui,sans-serif;fill:#3a4254}svg .yt{text-anchor:end}svg .xt{text-anchor:middle}
svg .yl{text-anchor:end}svg .ax{stroke:#8a93a6}svg .grid{stroke:#e6e8ee}svg .frame{fill:none;stroke:#c8cdd8}
svg .diag{stroke:#9aa3b5;stroke-dasharray:4 3;fill:none}svg .at{font-weight:600;fill:#5b6475}.tw{overflow-x:auto}
"""


def render(sink) -> str:
    """The whole report as one HTML string."""
    st = Store(sink)
    first, last, events, usage, dead = st.one(
        "SELECT min(ts), max(ts), count(), countIf(type = 'usage'), countIf(status = 'invalid') FROM {db}.events")
    fees = st.one("SELECT sum(fee) / 1e6 FROM {db}.usage")[0]
    contributors = st.one("SELECT uniqExact(contributor) FROM {db}.contributions FINAL")[0]
    period = f"{fmt_num(first)} – {fmt_num(last)} UTC (event time)" if events else "empty store"
    head = (f"<header><h1>PoA Stream report</h1><p>database <b>{_e(sink.database)}</b> · {_e(period)}</p></header>")
    summary = stats([("events logged", fmt_num(events)), ("usage requests", fmt_num(usage)),
                     ("fees (tokens)", fmt_num(fees)), ("contributors", fmt_num(contributors)),
                     ("dead-lettered", fmt_num(dead))])
    body = summary + _economics(st) + _attribution(st) + _spam(st) + _pipeline(st)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>PoA Stream report — {_e(sink.database)}</title><style>{CSS}</style></head>"
            f"<body>{head}<main>{body}</main></body></html>\n")


def write_report(sink, out_path: str | Path) -> Path:
    """Render the report of ``sink``'s store into ``out_path`` (parents created); returns the path."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(sink), encoding="utf-8")
    return out
