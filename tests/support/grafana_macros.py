"""The ClickHouse datasource's macro expansion, re-implemented for tests.

Follows grafana/clickhouse-datasource ``pkg/macros/macros.go`` (the plugin's macros)
merged over grafana-plugin-sdk-go ``data/sqlutil/macros.go`` (the defaults and the
interpolation engine, which the plugin calls through sqlds):

- macro names are tried longest first; each occurrence of ``$__name`` followed by a word
  boundary is a match; an argument list is taken only when ``(`` follows the name
  immediately, split at top-level commas, each argument whitespace-trimmed; a missing
  closing bracket is an error; every occurrence of the matched text is replaced.
- ``$__timeFilter(c)`` -> ``c >= toDateTime(FROM_S) AND c <= toDateTime(TO_S)``;
  ``_ms`` variants use ``fromUnixTimestamp64Milli(MS)``; ``$__fromTime``/``$__toTime``
  (and ``_ms``) give those bounds alone; ``$__dateFilter(c)`` compares with
  ``toDate('YYYY-MM-DD')``; ``$__dateTimeFilter(d, t)`` / ``$__dt`` combine both.
- ``$__timeInterval(c)`` -> ``toStartOfInterval(toDateTime(c), INTERVAL N second)``
  with ``N = max(interval seconds, 1)`` truncated; ``$__timeInterval_ms(c)`` ->
  ``toStartOfInterval(toDateTime64(c, 3), INTERVAL N millisecond)``; ``$__interval_s``
  -> N. Defaults kept from sqlutil: ``$__interval`` (Grafana's duration text),
  ``$__interval_ms``, ``$__timeFrom``/``$__timeTo`` (RFC 3339 literals).

Not implemented (no panel uses them): ``$__conditionalAll`` and ``$__timeGroup``,
``$__table``, ``$__column``, and Grafana's own template variables (``$var``,
``$__from``), which the frontend substitutes before the plugin sees the SQL.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone


class MacroError(ValueError):
    pass


def _unix(t: datetime) -> int:
    """Go's Time.Unix(): whole seconds since the epoch, rounded down."""
    return math.floor(t.timestamp())


def _ms(t: datetime) -> int:
    """Go's Time.UnixMilli()."""
    return math.floor(t.timestamp() * 1000)


def _date(t: datetime) -> str:
    return f"toDate('{t.astimezone(timezone.utc):%Y-%m-%d}')"


def _rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_interval(d: timedelta) -> str:
    """gtime.FormatInterval: the largest whole unit (y, d, h, m, s, ms)."""
    ms = int(d / timedelta(milliseconds=1))
    for unit, size in (("y", 365 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def _args(n: int, name: str, args: list[str] | None) -> list[str]:
    if args is None or len(args) != n:
        raise MacroError(f"$__{name}: unexpected number of arguments: expected {n}, "
                         f"received {0 if args is None else len(args)}")
    return args


def _macros(t0: datetime, t1: datetime, interval: timedelta):
    secs = max(int(interval.total_seconds()), 1)
    millis = max(int(interval / timedelta(milliseconds=1)), 1)
    dt = lambda t: f"toDateTime({_unix(t)})"  # noqa: E731
    dt64 = lambda t: f"fromUnixTimestamp64Milli({_ms(t)})"  # noqa: E731

    def time_filter(a):
        c, = _args(1, "timeFilter", a)
        return f"{c} >= {dt(t0)} AND {c} <= {dt(t1)}"

    def time_filter_ms(a):
        c, = _args(1, "timeFilter_ms", a)
        return f"{c} >= {dt64(t0)} AND {c} <= {dt64(t1)}"

    def date_filter(a):
        c, = _args(1, "dateFilter", a)
        return f"{c} >= {_date(t0)} AND {c} <= {_date(t1)}"

    def date_time_filter(a):
        d, c = _args(2, "dateTimeFilter", a)
        return (f"({d} >= {_date(t0)} AND {d} <= {_date(t1)}) AND "
                f"({c} >= {dt(t0)} AND {c} <= {dt(t1)})")

    def time_interval(a):
        c, = _args(1, "timeInterval", a)
        return f"toStartOfInterval(toDateTime({c}), INTERVAL {secs} second)"

    def time_interval_ms(a):
        c, = _args(1, "timeInterval_ms", a)
        return f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {millis} millisecond)"

    def time_from(a):
        c, = _args(1, "timeFrom", a)
        return f"{c} >= '{_rfc3339(t0)}'"

    def time_to(a):
        c, = _args(1, "timeTo", a)
        return f"{c} <= '{_rfc3339(t1)}'"

    return {
        # sqlutil defaults (the plugin overrides timeFilter)
        "interval": lambda a: format_interval(interval),
        "interval_ms": lambda a: str(int(interval / timedelta(milliseconds=1))),
        "timeFrom": time_from,
        "timeTo": time_to,
        # the plugin's
        "fromTime": lambda a: dt(t0),
        "toTime": lambda a: dt(t1),
        "fromTime_ms": lambda a: dt64(t0),
        "toTime_ms": lambda a: dt64(t1),
        "timeFilter": time_filter,
        "timeFilter_ms": time_filter_ms,
        "dateFilter": date_filter,
        "dateTimeFilter": date_time_filter,
        "dt": date_time_filter,
        "timeInterval": time_interval,
        "timeInterval_ms": time_interval_ms,
        "interval_s": lambda a: str(secs),
    }


def _parse_args(rest: str) -> tuple[list[str] | None, int]:
    """sqlutil.parseArgs: (args, length of the bracketed list) or (None, 0) without one."""
    if not rest.startswith("("):
        return None, 0
    args, depth, arg = [], 0, []
    for i, ch in enumerate(rest):
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(arg).strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append("".join(arg).strip())
            arg = []
            continue
        arg.append(ch)
    raise MacroError("failed to parse macro arguments (missing close bracket?)")


def expand(sql: str, time_from: datetime, time_to: datetime,
           interval: timedelta = timedelta(hours=1)) -> str:
    """The SQL the plugin sends to ClickHouse for a dashboard time range and interval."""
    if time_from.tzinfo is None or time_to.tzinfo is None:
        raise ValueError("time range bounds must be timezone-aware")
    macros = _macros(time_from, time_to, interval)
    for name in sorted(macros, key=len, reverse=True):
        pattern = re.compile(r"\$__" + re.escape(name) + r"\b", re.ASCII)
        # sqlutil collects the matches, then replaces every occurrence of each; a result
        # never contains a macro, so searching again after each replacement is the same
        while True:
            m = pattern.search(sql)
            if m is None:
                break
            args, length = _parse_args(sql[m.end():])
            full = sql[m.start():m.end() + length]
            sql = sql.replace(full, macros[name](args))
    return sql
