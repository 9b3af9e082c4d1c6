"""Producer helpers for operators, contributors and the demo (kafka-python).

``EventProducer.send(event_dict)`` validates an event against contract v1 before
producing it (raising :class:`streams.events.EventError` with the reason, so a bad
event never reaches Kafka from here) and routes it to its topic with a key that
keeps related events ordered: contributions and their votes by contribution_id,
models by model_id, usage by model_id. ``send_raw`` produces bytes as they are
(for replaying files and for tests that need malformed messages).
"""
from __future__ import annotations

from poa_stream.streams import topics
from poa_stream.streams.events import (Contribution, Model, Usage, Validation, decode_event,
                            encode_event)

MAX_REQUEST_BYTES = 4 << 20


def key_of(event) -> str:
    if isinstance(event, (Contribution, Validation)):
        return event.contribution_id
    if isinstance(event, (Model, Usage)):
        return event.model_id
    return event.event_id


class EventProducer:
    def __init__(self, conn, **client_kwargs):
        """``conn``: a streams.connection.KafkaConnection or a bare bootstrap string (PLAINTEXT)."""
        from kafka import KafkaProducer

        from poa_stream.streams.connection import as_connection
        self._p = KafkaProducer(**as_connection(conn).kafka_python(), acks="all", linger_ms=20,
                                max_request_size=MAX_REQUEST_BYTES, **client_kwargs)

    def send(self, event: dict | str | bytes):
        """Validate and produce one event; returns the send future. Raises EventError."""
        import json
        raw = event if isinstance(event, (str, bytes)) else json.dumps(event)
        ev = decode_event(raw)
        return self._p.send(topics.TOPIC_OF_TYPE[ev.type], key=key_of(ev).encode(),
                            value=encode_event(ev))

    def send_raw(self, topic: str, value: bytes, key: bytes | None = None):
        return self._p.send(topic, key=key, value=value)

    def flush(self, timeout_s: float | None = None) -> None:
        self._p.flush(timeout=timeout_s)

    def close(self) -> None:
        self._p.close()

    def __enter__(self) -> "EventProducer":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()
        self.close()


def raw_key(raw: bytes) -> bytes | None:
    """The partition key of a raw message when it decodes; for a malformed one a digest of its
    bytes (the same message always lands on the same partition: the same input, the same log)."""
    import hashlib

    from poa_stream.streams.events import EventError
    try:
        return key_of(decode_event(raw)).encode()
    except EventError:
        return b"raw:" + hashlib.blake2b(raw, digest_size=8).hexdigest().encode()


def produce_records(conn, records, on_progress=None, **client_kwargs) -> int:
    """Produce (topic, raw bytes) pairs as they are, keyed like :meth:`EventProducer.send`."""
    n = 0
    with EventProducer(conn, **client_kwargs) as producer:
        for n, (topic, raw) in enumerate(records, 1):
            producer.send_raw(topic, raw, key=raw_key(raw))
            if on_progress and n % 200 == 0:
                on_progress(n)
    if on_progress:
        on_progress(n)
    return n
