"""Kafka admin helpers (kafka-python): topic creation and group progress.

Both take the one Kafka connection (streams/connection.py: credentials and TLS) or a bare
bootstrap string. ``create_topics`` is what ``poa topics create`` and the worker's start
run: every PoA topic with its explicit partition count (``Settings.topic_partitions``,
one for models), the configured replication factor and its topic configuration.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from poa_stream.streams import topics


@dataclass(frozen=True)
class PartitionProgress:
    topic: str
    partition: int
    begin: int
    end: int
    committed: int | None  # None: the group has not committed this partition

    @property
    def position(self) -> int:
        return self.committed if self.committed is not None else self.begin

    @property
    def lag(self) -> int:
        return max(0, self.end - self.position)


def _committed(admin, group: str, parts, timeout_s: float = 60.0) -> dict:
    """The group's committed offsets, waiting out a coordinator that is still starting."""
    from kafka.errors import KafkaError
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return admin.list_group_offsets({group: parts}).get(group, {})
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def topic_config(name: str) -> dict[str, str]:
    """Input topics stamp records with the broker's clock (LogAppendTime): the worker bounds
    an event's time by its record's timestamp, which a producer then cannot forge."""
    cfg = {"max.message.bytes": str(4 << 20)}
    if name in topics.INPUT_TOPICS:
        cfg["message.timestamp.type"] = "LogAppendTime"
    return cfg


def create_topics(conn, partitions: int, replication_factor: int = 1,
                  topic_names=topics.ALL_TOPICS) -> list[str]:
    """Create the missing PoA topics with explicit partition counts and ``replication_factor``;
    returns those newly created. Existing topics are left as they are."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from poa_stream.streams.connection import as_connection
    if partitions < 1 or replication_factor < 1:
        raise ValueError("partitions and replication factor must be >= 1")
    admin = KafkaAdminClient(**as_connection(conn).kafka_python())
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(t, topics.partitions_for(t, partitions), replication_factor, topic_configs=topic_config(t))
               for t in topic_names if t not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in new]
    finally:
        admin.close()


def input_sources(conn, topic_names=topics.INPUT_TOPICS) -> list[tuple[str, int]]:
    """Every (topic, partition) of ``topic_names`` the broker has (the scaled merge's sources)."""
    from kafka import KafkaConsumer

    from poa_stream.streams.connection import as_connection
    consumer = KafkaConsumer(**as_connection(conn).kafka_python())
    try:
        return [(t, p) for t in topic_names for p in sorted(consumer.partitions_for_topic(t) or ())]
    finally:
        consumer.close()


def group_progress(conn, group: str, topic_names=topics.INPUT_TOPICS) -> list[PartitionProgress]:
    """Begin/end/committed offsets of every partition of ``topic_names`` for ``group``."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    from poa_stream.streams.connection import as_connection
    opts = as_connection(conn).kafka_python()
    admin = KafkaAdminClient(**opts)
    consumer = KafkaConsumer(**opts)
    try:
        parts = [TopicPartition(t, p) for t in topic_names
                 for p in sorted(consumer.partitions_for_topic(t) or ())]
        begin, end = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
        committed = _committed(admin, group, parts)
        out = []
        for tp in parts:
            c = committed.get(tp)
            off = c.offset if c is not None and c.offset is not None and c.offset >= 0 else None
            out.append(PartitionProgress(tp.topic, tp.partition, begin[tp], end[tp], off))
        return out
    finally:
        consumer.close()
        admin.close()
