"""A contributor's reward stream: ``poa rewards tail --account A``.

Reads poa.rewards (keyed by account) with a real read_committed consumer, so it sees
each committed credit once (the worker publishes each batch in one Kafka transaction,
streams/outbox.py); it also drops repeats by ``entry_id``, a guard for streams written
by other producers. ``follow=False`` stops once every
partition is read to its end offset at the time of the call.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

from poa_stream.streams import topics


def tail_rewards(conn, account: str, from_beginning: bool = True, follow: bool = True,
                 poll_ms: int = 500, **client_kwargs) -> Iterator[dict]:
    from kafka import KafkaConsumer, TopicPartition

    from poa_stream.streams.connection import as_connection
    consumer = KafkaConsumer(**as_connection(conn).kafka_python(), enable_auto_commit=False, group_id=None,
                             isolation_level="read_committed", **client_kwargs)
    try:
        parts = [TopicPartition(topics.REWARDS, p)
                 for p in sorted(consumer.partitions_for_topic(topics.REWARDS) or ())]
        consumer.assign(parts)
        if from_beginning:
            consumer.seek_to_beginning(*parts)
        else:
            consumer.seek_to_end(*parts)
        end = consumer.end_offsets(parts)
        key = account.encode()
        seen: set[str] = set()
        while True:
            batch = consumer.poll(timeout_ms=poll_ms)
            for records in batch.values():
                for rec in records:
                    if rec.key != key:
                        continue
                    credit = json.loads(rec.value)
                    if credit["entry_id"] in seen:
                        continue
                    seen.add(credit["entry_id"])
                    yield credit
            if not follow and all(consumer.position(tp) >= end[tp] for tp in parts):
                return
    finally:
        consumer.close()
