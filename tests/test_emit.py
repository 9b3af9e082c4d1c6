"""Producer tooling (poa/emit.py, ``poa emit``): events are validated before anything
connects to Kafka; a valid event reaches the real broker and reads back unchanged."""
from __future__ import annotations

import json
import time
import uuid

import pytest
import typer
from typer.testing import CliRunner

from poa_stream.emit import (build_event, contribution_event, emit_usage, model_event, usage_event,
                      usage_event_id, validation_event)
from poa_stream.streams.events import EventError, decode_event, encode_event

NO_BROKER = "127.0.0.1:9"  # nothing listens there: a connection attempt would fail loudly


def _cli() -> typer.Typer:
    from poa_stream.cli_tools import emit_app
    app = typer.Typer()
    app.add_typer(emit_app, name="emit")
    app.command("noop")(lambda: None)
    return app


def _run(*args: str):
    return CliRunner().invoke(_cli(), ["emit", *args])


def _flat(text: str) -> str:
    return " ".join(text.split())


class _NoSend:
    def send(self, event):
        raise AssertionError("an invalid event must not reach the producer")


def test_builders_fill_ids_and_time_and_validate():
    ev = usage_event(model_id="m-1", fee=1_000, output="some output text",
                     influence={"c-1": 0.5, "c-2": 0.2})
    assert ev["type"] == "usage" and ev["fee"] == 1_000
    assert uuid.UUID(ev["request_id"]) and ev["event_id"] == usage_event_id("m-1", ev["request_id"])
    assert ev["ts"].endswith("Z") and decode_event(json.dumps(ev)).ts.tzinfo is not None
    assert ev["influence"] == [{"contribution_id": "c-1", "score": 0.5},
                               {"contribution_id": "c-2", "score": 0.2}]
    assert encode_event(decode_event(json.dumps(ev))) == json.dumps(
        ev, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    c = contribution_event(contributor="alice", datanet="legal-de", content="Text.")
    assert c["kind"] == "dataset" and c["contribution_id"].startswith("c-")
    v = validation_event(validator="val", contribution_id=c["contribution_id"], verdict="accept",
                         event_id="ev-fixed", ts="2026-01-01T00:00:00+01:00")
    assert (v["event_id"], v["ts"]) == ("ev-fixed", "2025-12-31T23:00:00.000Z")
    m = model_event(model_id="m-2", operator="op", method="lora", datanets="legal-de=1,legal-fr=0.5",
                    base_models=["m-1"])
    assert m["datanets"] == [{"datanet": "legal-de", "weight": 1.0}, {"datanet": "legal-fr", "weight": 0.5}]


@pytest.mark.parametrize("build, reason", [
    (lambda: usage_event(model_id="m", fee=-5, output="x"), "usage: fee: Input should be greater than or equal to 0"),
    (lambda: usage_event(model_id="m", fee=5, output="x", influence="c1:0.5"), "influence: expected NAME=NUMBER"),
    (lambda: validation_event(validator="v", contribution_id="c", verdict="maybe"),
     "validation: verdict: Input should be 'accept' or 'reject'"),
    (lambda: model_event(model_id="m", operator="o", method="train", datanets={"d": 1}), "model: method:"),
    (lambda: build_event("usage", {"type": "model"}), "event type 'model' given where a 'usage' event"),
    (lambda: build_event("usage", {"model_id": "m", "fee": 1, "output": "x", "request_id": "r", "colour": 1}),
     "colour: unknown field"),
])
def test_bad_events_are_rejected_with_the_reason(build, reason):
    with pytest.raises(EventError) as exc:
        build()
    assert reason in exc.value.reason
    with pytest.raises(EventError):
        emit_usage(_NoSend(), model_id="m", fee=-1, output="x")


def test_cli_rejects_a_bad_event_before_connecting():
    res = _run("usage", "--model-id", "m-1", "--fee", "-5", "--output", "hi", "--bootstrap", NO_BROKER)
    assert res.exit_code == 2
    assert "invalid event: usage: fee: Input should be greater than or equal to 0" in _flat(res.output)
    assert "connect" not in res.output


def test_cli_rejects_a_bad_line_of_a_file_and_produces_nothing(tmp_path):
    good = {"validator": "v", "contribution_id": "c-1", "verdict": "accept"}
    f = tmp_path / "votes.jsonl"
    f.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "quality": 2}) + "\n")
    res = _run("validation", "--file", str(f), "--bootstrap", NO_BROKER)
    assert res.exit_code == 2
    assert f"{f}:3: validation: quality: Input should be less than or equal to 1" in _flat(res.output)


def test_cli_refuses_options_mixed_with_json():
    res = _run("validation", "--verdict", "accept", "--json", '{"validator": "v"}', "--bootstrap", NO_BROKER)
    assert res.exit_code == 2 and "not both" in _flat(res.output)


def test_cli_dry_run_prints_the_canonical_event(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("The model's answer.", encoding="utf-8")
    res = _run("usage", "--model-id", "m-1", "--fee", "1000", "--output-file", str(out),
               "--request-id", "r-1", "--influence", "c1=0.5,c2=0.2", "--dry-run")
    assert res.exit_code == 0, res.output
    ev = json.loads(res.output)
    assert (ev["output"], ev["request_id"], ev["fee"]) == ("The model's answer.", "r-1", 1000)
    res = _run("model", "--json", json.dumps({"model_id": "m-9", "operator": "op", "method": "merge",
                                              "base_models": ["m-1", "m-2"],
                                              "datanets": [{"datanet": "d", "weight": 1.0}]}), "--dry-run")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["type"] == "model"


@pytest.mark.kafka
def test_emit_produces_to_the_broker_and_reads_back(kafka_bootstrap):
    from kafka import KafkaConsumer, TopicPartition

    from poa_stream.kafka_local import ensure_topics
    from poa_stream.streams import topics
    ensure_topics(kafka_bootstrap, 3)
    request_id = f"r-{uuid.uuid4().hex}"
    res = _run("usage", "--model-id", "m-emit-test", "--fee", "1000", "--output", "an answer",
               "--request-id", request_id, "--influence", "c1=0.5", "--bootstrap", kafka_bootstrap)
    assert res.exit_code == 0, res.output
    sent = json.loads(res.output)

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=1000)
    try:
        parts = [TopicPartition(topics.USAGE, p) for p in sorted(consumer.partitions_for_topic(topics.USAGE))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        found, deadline = None, time.monotonic() + 60
        while found is None and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=1000).values():
                for m in msgs:
                    if m.key == b"m-emit-test" and json.loads(m.value).get("request_id") == request_id:
                        found = m
    finally:
        consumer.close()
    assert found is not None, "the emitted event is not on poa.usage"
    assert json.loads(found.value) == sent
    assert found.value == encode_event(decode_event(found.value)), "produced in canonical form"


def test_docstring_examples():
    import doctest

    import poa_stream.emit as emit
    assert doctest.testmod(emit).failed == 0


def test_usage_event_ids_derive_from_the_request_id_on_every_path():
    from poa_stream.emit import build_event, usage_event, usage_event_id
    a = usage_event(model_id="m", fee=1, output="x", request_id="r-9", ts="2026-01-01T00:00:00Z")
    b = build_event("usage", {"model_id": "m", "fee": 1, "output": "x", "request_id": "r-9"},
                    ts="2026-01-01T00:00:00Z")  # the --json / --file path
    assert a["event_id"] == b["event_id"] == usage_event_id("m", "r-9")
    assert usage_event(model_id="m", fee=1, output="x", request_id="r-10")["event_id"] != a["event_id"]
