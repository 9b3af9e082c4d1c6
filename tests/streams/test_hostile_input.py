"""Hostile input: random bytes, huge payloads, deep nesting, wrong types, unicode edge
cases. The decoder never raises anything but EventError; the core never crashes and
writes exactly one dead letter per distinct bad message."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from poa_stream.processors.core import Core
from poa_stream.streams.events import EventError, decode_event

GOOD_USAGE = {"event_id": "u", "type": "usage", "ts": "2026-01-01T00:00:00Z", "request_id": "r",
              "model_id": "m", "fee": 5, "output": "ok"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


def mutated_events():
    keys = list(GOOD_USAGE)
    return st.builds(lambda k, v, drop: {**{kk: vv for kk, vv in GOOD_USAGE.items() if kk != drop}, k: v},
                     st.sampled_from(keys + ["extra", "influence"]), json_values, st.sampled_from(keys + [None]))


hostile = st.one_of(
    st.binary(max_size=300),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    mutated_events().map(lambda d: json.dumps(d, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 300).map(lambda n: ("{\"a\":" * n + "1" + "}" * n).encode()),
    st.sampled_from([b"", b"null", b"\"\\ud800\"", b"{\"type\":\"usage\",\"ts\":\"\\ud800\"}",
                     json.dumps({**GOOD_USAGE, "output": "\u202e\u0000\U0010ffff"}).encode(),
                     json.dumps({**GOOD_USAGE, "fee": 2**64}).encode(),
                     b'{"fee": 1e400, "type": "usage"}', b'{"type": "usage", "ts": NaN}']),
)


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile)
def test_decoder_only_raises_event_error(raw):
    try:
        decode_event(raw)
    except EventError as exc:
        assert exc.reason and isinstance(exc.reason, str)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(hostile, min_size=1, max_size=25))
def test_core_dead_letters_each_bad_message_once(settings, batch):
    core = Core(settings)
    dead = 0
    distinct_bad = set()
    for raw in batch + batch:  # every message delivered twice
        res = core.process("poa.usage", raw)
        res.extend(core.release(None))
        dead += len(res.rows.get("deadletter", []))
    for raw in batch:
        try:
            decode_event(raw)
        except EventError:
            distinct_bad.add(raw)
    assert dead == len(distinct_bad)
    assert core.stats.processed >= len(distinct_bad)


def test_huge_payloads_rejected_with_size_reason(settings):
    core = Core(settings)
    big = json.dumps({**GOOD_USAGE, "output": "x" * (3 << 20)}).encode()
    res = core.process("poa.usage", big)
    reason = res.rows["deadletter"][0]["reason"]
    assert "over the 3145728-byte limit" in reason
    assert len(res.rows["deadletter"][0]["payload"]) < (1 << 20) + 100
