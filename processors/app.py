"""The Faust worker: one agent per input topic, all feeding the same processing core.

Each agent takes batches (``stream.take(n, within=...)``), and under one lock
(batches are processed and written strictly one after another, so ``seq`` order in
the store is processing order):

1. passes every raw message through :class:`processors.core.Core` (no Faust types);
2. writes the rows to the sink in a worker thread, retrying the *same* batch inside
   the loop body until it lands: ``take()`` acknowledges the batch in a ``finally``
   after the body, so a write error must never escape it;
3. publishes rewards, flags and dead letters to their output topics.

Offsets therefore move only after the rows they produced are stored. If the worker
dies before the commit, the re-delivered messages are recognised by their keys in
the rebuilt core state and change nothing. On start the core is rebuilt from the
store's event log after orphans of an interrupted batch are removed.
Agents run at concurrency 1 (faust#606: concurrency > 1 can commit past an
in-flight message).
"""
from __future__ import annotations

import asyncio
import logging
import time

import faust

from poa.settings import Settings
from processors.core import Core, Result
from processors.replay import restore
from sinks import open_sink
from sinks.base import Sink, SinkError
from streams import topics

log = logging.getLogger("poa.worker")


def kafka_client_options(s: Settings) -> dict:
    opts: dict = {"broker_credentials": None}
    if s.kafka_security_protocol != "PLAINTEXT" and s.kafka_sasl_mechanism:
        opts["broker_credentials"] = faust.SASLCredentials(
            username=s.kafka_sasl_username or "",
            password=s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else "",
            mechanism=s.kafka_sasl_mechanism)
    return opts


class Pipeline:
    """Core + sink + output topics, shared by the agents of one worker."""

    def __init__(self, settings: Settings, sink: Sink):
        self.s = settings
        self.sink = sink
        self.core = Core(settings)
        self.lock = asyncio.Lock()
        self.out: dict[str, faust.TopicT] = {}
        self.batches = 0

    def restore(self) -> int:
        self.sink.ensure_schema()
        return restore(self.core, self.sink)

    async def write(self, res: Result) -> None:
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self.sink.write, res.rows)
                return
            except SinkError as exc:
                attempt += 1
                delay = min(30.0, exc.retry_after_s * attempt)
                log.warning("sink write failed (attempt %d), retrying in %.1fs: %s", attempt, delay, exc)
                await asyncio.sleep(delay)

    async def handle(self, topic: str, values: list[bytes]) -> None:
        async with self.lock:
            res = Result()
            for raw in values:
                res.extend(self.core.process(topic, raw))
            await self.write(res)
            for out_topic, key, value in res.messages:
                await self.out[out_topic].send(key=key.encode(), value=value)
            self.batches += 1


def build_app(settings: Settings, sink: Sink | None = None) -> tuple[faust.App, Pipeline]:
    sink = sink or open_sink(settings)
    pipe = Pipeline(settings, sink)
    t0 = time.monotonic()
    n = pipe.restore()
    log.info("core rebuilt from %d logged events in %.1fs", n, time.monotonic() - t0)
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=4 << 20,
        consumer_max_fetch_size=8 << 20,
        broker_commit_every=settings.worker_batch_max,
        broker_commit_interval=1.0,
        **kafka_client_options(settings),
    )
    for name in topics.OUTPUT_TOPICS:
        pipe.out[name] = app.topic(name, value_serializer="raw", key_serializer="raw",
                                   partitions=topics.partitions_for(name, settings.topic_partitions))

    def make_agent(name: str):
        topic = app.topic(name, value_serializer="raw", key_serializer="raw",
                          partitions=topics.partitions_for(name, settings.topic_partitions))

        async def agent(stream):
            async for values in stream.take(settings.worker_batch_max,
                                            within=settings.worker_batch_within_s):
                await pipe.handle(name, [v if isinstance(v, bytes) else bytes(v or b"") for v in values])

        agent.__name__ = agent.__qualname__ = "consume_" + name.replace(".", "_")
        app.agent(topic, name=agent.__name__, concurrency=1)(agent)

    for name in topics.INPUT_TOPICS:
        make_agent(name)
    return app, pipe


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the worker until SIGTERM/SIGINT (the ``poa worker`` command)."""
    from poa.kafka_local import ensure_topics
    ensure_topics(settings.bootstrap, settings.topic_partitions)
    app, _ = build_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
