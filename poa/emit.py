"""Producer API for operators, contributors and validators.

Builders (``usage_event``, ``contribution_event``, ``validation_event``, ``model_event``,
or :func:`build_event` for any type) fill what the contract needs and a caller rarely
has at hand: ``event_id`` (a uuid4; for a usage with a ``request_id``, derived from it, so a
retried report is the same event), ``ts`` (now, UTC), and the ids a new object gets
(``request_id`` of a usage, ``contribution_id`` of a contribution). They validate the
event against contract v1 and return its canonical dict (the form that is produced);
an invalid event raises :class:`streams.events.EventError` whose ``reason`` says what is
wrong, before any connection to Kafka.

``emit_usage(producer, ...)`` and its siblings build, then send through
:class:`streams.producer.EventProducer` (which validates once more and routes the
event to its topic with its partition key), wait for the broker's acknowledgement
(raising :class:`poa.client.DeliveryError` when it does not come), and return the event
dict. Serving processes should prefer :mod:`poa.client` (sync and async, a ``Delivery``
per send, signing, fast failure).
``open_producer(settings)`` connects with the configured bootstrap servers and SASL.

>>> ev = usage_event(model_id="m-1", fee=1_000, output="hello", request_id="r-1",
...                  event_id="ev-1", ts="2026-01-01T00:00:00Z", influence="c-1=0.5")
>>> ev["type"], ev["fee"], ev["influence"], ev["ts"]
('usage', 1000, [{'contribution_id': 'c-1', 'score': 0.5}], '2026-01-01T00:00:00.000Z')
"""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from poa_stream.streams.events import EventError, decode_event, event_to_dict

EVENT_TYPES = ("contribution", "validation", "model", "usage")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ts(ts: datetime | str | None) -> str:
    if ts is None:
        return _now()
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise EventError("ts: a datetime needs a timezone (use timezone.utc)")
        return ts.isoformat()
    return ts


def build_event(etype: str, fields: Mapping[str, Any], *, event_id: str | None = None,
                ts: datetime | str | None = None) -> dict:
    """Validate one event of type ``etype`` from ``fields`` (None values are left out),
    filling ``type``, ``event_id`` and ``ts`` when absent; returns the canonical dict."""
    if etype not in EVENT_TYPES:
        raise EventError(f"unknown event type {etype!r}; expected one of {', '.join(EVENT_TYPES)}")
    ev = {k: v for k, v in fields.items() if v is not None}
    if ev.setdefault("type", etype) != etype:
        raise EventError(f"event type {ev['type']!r} given where a {etype!r} event is expected",
                         str(ev.get("event_id", "")))
    if event_id is not None:
        ev["event_id"] = event_id
    if etype == "usage" and "request_id" not in ev:
        ev["request_id"] = str(uuid.uuid4())  # as usage_event does: one id per inference
    if etype == "usage" and "event_id" not in ev and isinstance(ev.get("request_id"), str) \
            and isinstance(ev.get("model_id"), str):
        ev["event_id"] = usage_event_id(ev["model_id"], ev["request_id"])  # a retry is the same event
    ev.setdefault("event_id", str(uuid.uuid4()))
    ev["ts"] = _ts(ts if ts is not None else ev.get("ts"))
    try:
        raw = json.dumps(ev, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise EventError(f"{etype}: not representable as JSON: {exc}", str(ev["event_id"])) from None
    return event_to_dict(decode_event(raw))


def parse_pairs(text: str, what: str, key: str, value: str) -> list[dict]:
    """``"a=0.5,b=0.2"`` -> ``[{key: "a", value: 0.5}, {key: "b", value: 0.2}]``."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, num = part.rpartition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out.append({key: name.strip(), value: float(num)})
        except ValueError:
            raise EventError(f"{what}: expected NAME=NUMBER[,NAME=NUMBER...], got {part!r}") from None
    return out


def _influence(influence) -> list[dict] | None:
    if influence is None or isinstance(influence, list):
        return influence
    if isinstance(influence, Mapping):
        return [{"contribution_id": k, "score": float(v)} for k, v in influence.items()]
    return parse_pairs(str(influence), "influence", "contribution_id", "score")


def _datanets(datanets) -> list[dict] | None:
    if datanets is None:
        return None
    if isinstance(datanets, Mapping):
        return [{"datanet": k, "weight": float(v)} for k, v in datanets.items()]
    if isinstance(datanets, str):
        return parse_pairs(datanets, "datanets", "datanet", "weight")
    return [{"datanet": d, "weight": 1.0} if isinstance(d, str) else d for d in datanets]


def usage_event_id(model_id: str, request_id: str) -> str:
    """The event id of a usage report, derived from what identifies the inference: a retry of
    the same report is the same event (the worker ignores it, or dead-letters it as a
    conflict if its content changed; ``request_id`` is billed once either way)."""
    h = hashlib.blake2b(f"{model_id}\0{request_id}".encode(), digest_size=16).hexdigest()
    return f"u-{h}"


def usage_event(*, model_id: str, fee: int, output: str, request_id: str | None = None,
                influence: Iterable | Mapping | str | None = None, **common) -> dict:
    """A paid inference: ``fee`` in micro-units; ``influence`` as ``{cid: score}``, a list of
    ``{contribution_id, score}`` or ``"c1=0.5,c2=0.2"``; ``request_id`` defaults to a uuid4.
    Given a ``request_id`` (and no ``event_id``), the event id is derived from it
    (:func:`usage_event_id`): a retry does not become a second report."""
    if request_id and common.get("event_id") is None:
        common["event_id"] = usage_event_id(model_id, request_id)
    return build_event("usage", {"model_id": model_id, "fee": fee, "output": output,
                                 "request_id": request_id or str(uuid.uuid4()),
                                 "influence": _influence(influence)}, **common)


def contribution_event(*, contributor: str, datanet: str, content: str, kind: str | None = "dataset",
                       contribution_id: str | None = None, license: str | None = None,
                       stake: int | None = None, **common) -> dict:
    """An upload into a datanet; ``kind`` defaults to dataset, ``contribution_id`` to
    ``c-<uuid4 hex>``."""
    return build_event("contribution", {
        "contribution_id": contribution_id or f"c-{uuid.uuid4().hex}", "contributor": contributor,
        "datanet": datanet, "kind": kind or "dataset", "content": content, "license": license,
        "stake": stake}, **common)


def validation_event(*, validator: str, contribution_id: str, verdict: str,
                     quality: float | None = None, stake: int | None = None, **common) -> dict:
    """A validator's vote (``accept`` or ``reject``) on a contribution."""
    return build_event("validation", {"validator": validator, "contribution_id": contribution_id,
                                      "verdict": verdict, "quality": quality, "stake": stake},
                       **common)


def model_event(*, model_id: str, operator: str, method: str, datanets,
                base_models: list[str] | None = None, inherit: float | None = None,
                **common) -> dict:
    """A model registration; ``datanets`` as ``{name: weight}``, ``"a=1,b=0.5"``, names
    (weight 1) or ``{datanet, weight}`` dicts."""
    return build_event("model", {"model_id": model_id, "operator": operator, "method": method,
                                 "datanets": _datanets(datanets),
                                 "base_models": list(base_models) if base_models else None,
                                 "inherit": inherit}, **common)


def _send(producer, ev: dict) -> dict:
    """Send through an :class:`streams.producer.EventProducer` and wait for the broker's
    acknowledgement (a :class:`poa.client.Client` waits by itself): a lost event raises
    :class:`poa.client.DeliveryError` here, never silently later."""
    from poa_stream.client import DeliveryError
    from poa_stream.stores import first_line
    result = producer.send(ev)
    if hasattr(result, "get"):
        try:
            result.get(timeout=30)
        except Exception as exc:
            raise DeliveryError(ev["event_id"], first_line(exc)) from None
    return ev


def emit_usage(producer, **kw) -> dict:
    return _send(producer, usage_event(**kw))


def emit_contribution(producer, **kw) -> dict:
    return _send(producer, contribution_event(**kw))


def emit_validation(producer, **kw) -> dict:
    return _send(producer, validation_event(**kw))


def emit_model(producer, **kw) -> dict:
    return _send(producer, model_event(**kw))


def open_producer(settings, bootstrap: str | None = None):
    """An :class:`streams.producer.EventProducer` on the configured cluster."""
    from poa_stream.streams.producer import EventProducer
    return EventProducer(settings.kafka(bootstrap))
