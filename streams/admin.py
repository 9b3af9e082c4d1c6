"""Kafka admin helpers (kafka-python): group progress over the input topics."""
from __future__ import annotations

import time
from dataclasses import dataclass

from streams import topics


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


def group_progress(bootstrap: str, group: str, topic_names=topics.INPUT_TOPICS) -> list[PartitionProgress]:
    """Begin/end/committed offsets of every partition of ``topic_names`` for ``group``."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
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
