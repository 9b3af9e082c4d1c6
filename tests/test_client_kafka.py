"""The operator client (poa/client.py) against real brokers: every send is acknowledged or
raises, fast failure when Kafka is unreachable, signing, validation before sending, and a
broker SIGKILLed mid-run: every acknowledged inference is in Kafka after it comes back, every
other one raised, and re-sending it (same request id, so the same event id) is safe."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import uuid

import pytest
from support.kafka import local_kafka_settings

from poa_stream.client import AsyncClient, Client, ClientError, DeliveryError
from poa_stream.kafka_local import LocalKafka
from poa_stream.streams.admin import create_topics
from poa_stream.settings import Settings
from poa_stream.streams import topics
from poa_stream.streams.events import EventError
from poa_stream.streams.signing import KeyRegistry

pytestmark = pytest.mark.kafka


def _read(bootstrap: str, deliveries) -> dict[str, dict]:
    """The events at the deliveries' (topic, partition, offset), by event id."""
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10_000)
    out = {}
    try:
        for d in deliveries:
            tp = TopicPartition(d.topic, d.partition)
            c.assign([tp])
            c.seek(tp, d.offset)
            for msg in c:
                ev = json.loads(msg.value)
                out[ev["event_id"]] = ev
                break
    finally:
        c.close()
    return out


def test_sync_client_returns_deliveries_that_are_in_kafka(kafka_bootstrap, tmp_path):
    from poa_stream.client import new_key
    key = new_key("op-1")
    (tmp_path / "k.json").write_text(json.dumps(key))
    rid = f"req-{uuid.uuid4().hex}"
    with Client(kafka_bootstrap, timeout_s=10, key_file=tmp_path / "k.json") as c:
        d = c.usage(model_id="m-client", fee=1_000, output="hello", request_id=rid)
        with pytest.raises(EventError):  # validated before sending: nothing produced
            c.usage(model_id="m-client", fee=-5, output="x")
    assert d.topic == topics.USAGE and d.offset >= 0 and d.event["request_id"] == rid
    got = _read(kafka_bootstrap, [d])[d.event_id]
    assert got["request_id"] == rid and got["signer"] == "op-1"
    # the signature verifies against the registered public key (what the worker checks)
    from poa_stream.streams.events import decode_event
    assert KeyRegistry({"op-1": key["public_key"]}).check(decode_event(json.dumps(got)), "op-1") is None


def test_async_client(kafka_bootstrap):
    async def go():
        async with AsyncClient(kafka_bootstrap, timeout_s=10) as c:
            return [await c.contribution(contributor="alice", datanet="dn", content=f"text {k}") for k in range(3)]
    ds = asyncio.run(go())
    assert len({d.event_id for d in ds}) == 3
    got = _read(kafka_bootstrap, ds)
    assert {d.event_id for d in ds} == set(got)


def test_unreachable_kafka_fails_fast_in_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # a closed port once the socket is gone
    t0 = time.monotonic()
    with pytest.raises(ClientError) as e:
        Client(f"127.0.0.1:{port}", timeout_s=2)
    assert time.monotonic() - t0 < 15  # not kafka-python's 30 s default bootstrap wait
    assert "\n" not in str(e.value) and f"127.0.0.1:{port}" in str(e.value)

    async def go():
        await AsyncClient(f"127.0.0.1:{port}", timeout_s=2).start()
    with pytest.raises(ClientError):
        asyncio.run(go())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_broker_killed_mid_run_loses_no_acknowledged_inference(kafka_bootstrap, tmp_path):
    main = LocalKafka(local_kafka_settings())
    if not (main.libs / ".complete").exists():
        pytest.skip("no resolved local broker jars (the tests use an external broker)")
    s = Settings(home=tmp_path, kafka_local_port=_free_port(), kafka_local_controller_port=_free_port(),
                 kafka_heap="256m", topic_partitions=1)
    broker = LocalKafka(s)
    broker.libs = main.libs
    broker.start()
    try:
        create_topics(broker.bootstrap, 1, 1, [topics.USAGE])
        acked, failed = [], []
        c = Client(broker.bootstrap, timeout_s=3)
        for k in range(10):
            acked.append(c.usage(model_id="m-kill", fee=1_000 + k, output=f"o{k}", request_id=f"r{k}"))
        os.kill(broker.pid(), signal.SIGKILL)
        time.sleep(0.5)
        for k in range(10, 13):  # the broker is gone: each send raises, none is silently dropped
            try:
                acked.append(c.usage(model_id="m-kill", fee=1_000 + k, output=f"o{k}", request_id=f"r{k}"))
            except DeliveryError as exc:
                failed.append((k, exc))
        c.close()
        assert failed and all("\n" not in str(e) for _, e in failed)
        broker.pid_file.unlink(missing_ok=True)
        broker.start()
        in_kafka = _read(broker.bootstrap, acked)
        assert {d.event_id for d in acked} <= set(in_kafka)  # every acknowledged inference is there
        with Client(broker.bootstrap, timeout_s=10) as c2:  # the caller re-sends what raised
            for k, exc in failed:
                d = c2.usage(model_id="m-kill", fee=1_000 + k, output=f"o{k}", request_id=f"r{k}")
                assert d.event_id == exc.event_id  # the same idempotency key: processed once
    finally:
        broker.stop()
