"""The client for model operators, contributors and validators: every send is acknowledged or raises.

``Client`` (kafka-python, blocking) and ``AsyncClient`` (aiokafka, asyncio) share one
contract:

- ``usage(...)``, ``contribution(...)``, ``validation(...)``, ``model(...)`` build the event
  (poa/emit.py: defaults filled, validated against contract v1 *before* anything is sent;
  an invalid event raises :class:`streams.events.EventError` with the reason), sign it when
  the client has a key (``key_file``: written by ``poa keys new``), produce it with
  ``acks=all`` on the idempotent producer, and **wait for the broker's acknowledgement**:
  they return a :class:`Delivery` (event id, topic, partition, offset) or raise
  :class:`DeliveryError`. ``send(event_dict)`` does the same for a ready event.
- The ``event_id`` is the idempotency key. A usage's id derives from (model_id, request_id)
  (:func:`poa.emit.usage_event_id`), so re-sending the same inference after a
  ``DeliveryError`` (or after a crash of the caller) can never bill it twice: the worker
  ignores a re-delivered event id. Retrying until a ``Delivery`` comes back is therefore
  safe, and is how a serving process loses no paid inference.
- Unreachable Kafka fails fast: constructing (or ``await start()``) raises
  :class:`ClientError` within ``timeout_s`` (default ``POA_CLIENT_TIMEOUT_S``, 5 s), one line;
  a broker that goes away mid-send makes that send raise ``DeliveryError`` within
  ``timeout_s`` as well.

>>> from poa_stream.client import Client                       # doctest: +SKIP
>>> with Client("127.0.0.1:9092") as c:                  # doctest: +SKIP
...     d = c.usage(model_id="m-1", fee=1_000, output="...", request_id="req-42")
...     d.event_id, d.partition, d.offset
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from poa_stream import emit
from poa_stream.stores import first_line
from poa_stream.streams import topics
from poa_stream.streams.events import decode_event, encode_event
from poa_stream.streams.producer import MAX_REQUEST_BYTES, key_of


class ClientError(RuntimeError):
    """Kafka cannot be reached (or the client is misconfigured): one line."""


class DeliveryError(RuntimeError):
    """An event the broker did not acknowledge in time: it may or may not be in Kafka.
    Re-send it (the same ``event_id``): the worker processes an event id once."""

    def __init__(self, event_id: str, reason: str):
        super().__init__(f"event {event_id} not acknowledged: {reason}")
        self.event_id, self.reason = event_id, reason


@dataclass(frozen=True)
class Delivery:
    event_id: str
    type: str
    topic: str
    partition: int
    offset: int
    event: dict


def load_key(path: Path) -> tuple[str, object]:
    """(account, nacl SigningKey) from a key file of ``poa keys new``."""
    from nacl.signing import SigningKey
    try:
        doc = json.loads(Path(path).read_text())
        return doc["account"], SigningKey(bytes.fromhex(doc["secret_key"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClientError(f"cannot read the key file {path}: {exc}") from None


def new_key(account: str) -> dict:
    """A new ed25519 key for ``account``: ``{"account", "secret_key", "public_key"}`` (hex)."""
    from nacl.signing import SigningKey
    k = SigningKey.generate()
    return {"account": account, "secret_key": k.encode().hex(), "public_key": k.verify_key.encode().hex()}


class _Base:
    def __init__(self, bootstrap: str | None, settings, timeout_s: float | None, key_file: Path | None):
        if settings is None:
            from poa_stream.settings import get_settings
            settings = get_settings()
        self.settings = settings
        self.bootstrap = bootstrap or settings.bootstrap
        self.timeout_s = float(timeout_s if timeout_s is not None else settings.client_timeout_s)
        self.signer = load_key(key_file) if key_file is not None else None

    def _conn_options(self, async_: bool) -> dict:
        """bootstrap_servers and the security options of the one Kafka configuration."""
        from poa_stream.streams.connection import KafkaConfigError
        try:
            conn = self.settings.kafka(self.bootstrap)
        except KafkaConfigError as exc:
            raise ClientError(str(exc)) from None
        return conn.aiokafka() if async_ else conn.kafka_python()

    def _prepare(self, event: dict) -> tuple[dict, str, bytes, bytes]:
        """Validate (and sign) ``event``: (canonical dict, topic, key, value)."""
        ev_obj = decode_event(json.dumps(event))
        ev = json.loads(encode_event(ev_obj))
        if self.signer is not None:
            from poa_stream.streams.signing import sign_event
            account, key = self.signer
            ev = sign_event(ev, account, key)
            ev_obj = decode_event(json.dumps(ev))
        return ev, topics.TOPIC_OF_TYPE[ev_obj.type], key_of(ev_obj).encode(), encode_event(ev_obj)

    def _build(self, etype: str, kw: dict) -> dict:
        builder = {"usage": emit.usage_event, "contribution": emit.contribution_event,
                   "validation": emit.validation_event, "model": emit.model_event}[etype]
        return builder(**kw)


class Client(_Base):
    """Blocking client (kafka-python); see the module doc."""

    def __init__(self, bootstrap: str | None = None, *, settings=None, timeout_s: float | None = None,
                 key_file: Path | None = None, **kafka_options):
        super().__init__(bootstrap, settings, timeout_s, key_file)
        from kafka import KafkaProducer
        ms = int(self.timeout_s * 1000)
        opts = dict(acks="all", enable_idempotence=True, linger_ms=5, max_request_size=MAX_REQUEST_BYTES,
                    bootstrap_timeout_ms=ms, max_block_ms=ms, request_timeout_ms=ms,
                    delivery_timeout_ms=ms + 10, **self._conn_options(async_=False))
        opts.update(kafka_options)
        try:
            self._p = KafkaProducer(**opts)
        except Exception as exc:
            raise ClientError(f"Kafka at {self.bootstrap} unreachable: {first_line(exc)}") from None

    def send(self, event: dict) -> Delivery:
        ev, topic, key, value = self._prepare(event)
        try:
            md = self._p.send(topic, key=key, value=value).get(timeout=self.timeout_s + 1)
        except Exception as exc:
            raise DeliveryError(ev["event_id"], first_line(exc)) from None
        return Delivery(ev["event_id"], ev["type"], md.topic, md.partition, md.offset, ev)

    def usage(self, **kw) -> Delivery:
        return self.send(self._build("usage", kw))

    def contribution(self, **kw) -> Delivery:
        return self.send(self._build("contribution", kw))

    def validation(self, **kw) -> Delivery:
        return self.send(self._build("validation", kw))

    def model(self, **kw) -> Delivery:
        return self.send(self._build("model", kw))

    def close(self) -> None:
        try:
            self._p.close(timeout=self.timeout_s)
        except Exception:  # closing a producer whose broker is gone: nothing left to report
            pass

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Base):
    """asyncio client (aiokafka): ``async with AsyncClient(...) as c: await c.usage(...)``."""

    def __init__(self, bootstrap: str | None = None, *, settings=None, timeout_s: float | None = None,
                 key_file: Path | None = None, **kafka_options):
        super().__init__(bootstrap, settings, timeout_s, key_file)
        self._options = kafka_options
        self._p = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer
        ms = int(self.timeout_s * 1000)
        opts = dict(acks="all", enable_idempotence=True, linger_ms=5, max_request_size=MAX_REQUEST_BYTES,
                    request_timeout_ms=ms, **self._conn_options(async_=True))
        opts.update(self._options)
        p = AIOKafkaProducer(**opts)
        try:
            await asyncio.wait_for(p.start(), self.timeout_s)
        except BaseException as exc:
            await p.stop()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ClientError(f"Kafka at {self.bootstrap} unreachable: {first_line(exc)}") from None
        self._p = p

    async def send(self, event: dict) -> Delivery:
        if self._p is None:
            await self.start()
        ev, topic, key, value = self._prepare(event)
        try:
            md = await asyncio.wait_for(self._p.send_and_wait(topic, value=value, key=key), self.timeout_s + 1)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise DeliveryError(ev["event_id"], first_line(exc)) from None
        return Delivery(ev["event_id"], ev["type"], md.topic, md.partition, md.offset, ev)

    async def usage(self, **kw) -> Delivery:
        return await self.send(self._build("usage", kw))

    async def contribution(self, **kw) -> Delivery:
        return await self.send(self._build("contribution", kw))

    async def validation(self, **kw) -> Delivery:
        return await self.send(self._build("validation", kw))

    async def model(self, **kw) -> Delivery:
        return await self.send(self._build("model", kw))

    async def close(self) -> None:
        if self._p is not None:
            p, self._p = self._p, None
            try:
                await asyncio.wait_for(p.stop(), self.timeout_s)
            except Exception:  # a broker that is gone: nothing left to report
                pass

    async def __aenter__(self) -> "AsyncClient":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
