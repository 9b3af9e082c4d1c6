import json
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

import pytest

from poa_stream.streams.events import (MAX_TEXT_BYTES, EventError, Usage, decode_event, encode_event,
                            json_schema)

BASE = {"event_id": "e1", "ts": "2026-01-01T00:00:00Z"}
GOOD = {
    "contribution": {**BASE, "type": "contribution", "contribution_id": "c1", "contributor": "alice",
                     "datanet": "legal-de", "kind": "dataset", "content": "Verträge über Grundstücke",
                     "license": "CC-BY-4.0", "stake": 5},
    "validation": {**BASE, "type": "validation", "validator": "v", "contribution_id": "c1",
                   "verdict": "accept", "quality": 0.5},
    "model": {**BASE, "type": "model", "model_id": "m", "operator": "op", "method": "finetune",
              "base_models": ["b"], "datanets": [{"datanet": "d", "weight": 1.0}], "inherit": 0.2},
    "usage": {**BASE, "type": "usage", "request_id": "r", "model_id": "m", "fee": 10, "output": "x",
              "influence": [{"contribution_id": "c1", "score": 0.5}]},
}


def reason(obj) -> str:
    raw = obj if isinstance(obj, (bytes, str)) else json.dumps(obj, ensure_ascii=False)
    with pytest.raises(EventError) as info:
        decode_event(raw)
    return info.value.reason


@pytest.mark.parametrize("etype", list(GOOD))
def test_valid_events_round_trip(etype):
    ev = decode_event(json.dumps(GOOD[etype]))
    assert ev.type == etype
    again = decode_event(encode_event(ev))
    assert again == ev
    assert encode_event(again) == encode_event(ev)


@pytest.mark.parametrize("patch, expected", [
    ({"fee": -1}, "fee: Input should be greater than or equal to 0"),
    ({"fee": 1.5}, "fee: Input should be a valid integer"),
    ({"fee": "10"}, "fee: Input should be a valid integer"),
    ({"fee": True}, "fee: Input should be a valid integer"),
    ({"ts": "2026-13-01T00:00:00Z"}, "ts: Value error, not an RFC 3339 timestamp"),
    ({"ts": "2026-01-01T00:00:00"}, "ts: Value error, timestamp needs"),
    ({"ts": 1767225600}, "ts: Value error, must be an RFC 3339 timestamp string"),
    ({"output": "x" * (MAX_TEXT_BYTES + 1)}, "output: Value error, is over 1048576 bytes"),
    ({"output": "ü" * (MAX_TEXT_BYTES // 2 + 1)}, "output: Value error, is over 1048576 bytes"),
    ({"surprise": 1}, "surprise: unknown field"),
    ({"influence": [{"contribution_id": "c", "score": -1}]}, "influence.0.score"),
])
def test_usage_rejections_are_precise(patch, expected):
    assert expected in reason({**GOOD["usage"], **patch})


def test_missing_field_named():
    bad = dict(GOOD["contribution"])
    del bad["datanet"]
    assert reason(bad) == "contribution: datanet: missing required field"


def test_unknown_type_invalid_json_and_non_objects():
    assert reason({**BASE, "type": "payment"}).startswith("unknown event type 'payment'")
    assert reason(b"{not json").startswith("invalid JSON")
    assert reason(b"\xff\xfe\x00").startswith("invalid JSON")
    assert reason(b"[1, 2]") == "event must be a JSON object, got list"
    assert "nested deeper" in reason(b"[" * 50000 + b"]" * 50000)
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    assert "nested deeper" in reason(json.dumps({**GOOD["usage"], "x": deep}))


def test_event_id_kept_on_rejection():
    with pytest.raises(EventError) as info:
        decode_event(json.dumps({**GOOD["usage"], "fee": -5}))
    assert info.value.event_id == "e1"


def test_timestamps_normalised_to_utc():
    ev = decode_event(json.dumps({**GOOD["usage"], "ts": "2026-01-01T02:00:00+02:00"}))
    assert isinstance(ev, Usage)
    assert json.loads(encode_event(ev))["ts"] == "2026-01-01T00:00:00.000Z"


def test_json_schema_lists_all_types():
    text = json.dumps(json_schema())
    for name in ("Contribution", "Validation", "Model", "Usage"):
        assert name in text


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-8))])))
def test_format_ts_is_the_strftime_form(ts):
    from poa_stream.streams.events import format_ts
    assert format_ts(ts) == ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@pytest.mark.parametrize("field,obj", [
    ("contributor", {"type": "contribution", "contribution_id": "c", "datanet": "d", "kind": "dataset",
                     "content": "some text"}),
    ("validator", {"type": "validation", "contribution_id": "c", "verdict": "accept"}),
    ("operator", {"type": "model", "model_id": "m", "method": "pretrain", "datanets": [{"datanet": "d", "weight": 1}]}),
])
@pytest.mark.parametrize("name", ["pool:d", "escrow:c"])
def test_ledger_account_names_are_reserved(field, obj, name):
    """`pool:<datanet>` and `escrow:<contribution>` accounts belong to the ledger's datanet
    pools and escrow: no event may claim one."""
    raw = json.dumps({"event_id": "e", "ts": "2026-01-01T00:00:00Z", field: name, **obj}).encode()
    with pytest.raises(EventError, match="reserved for the ledger's datanet pools and escrow"):
        decode_event(raw)
    ok = json.dumps({"event_id": "e", "ts": "2026-01-01T00:00:00Z", field: "pool-d", **obj}).encode()
    assert decode_event(ok).event_id == "e"
