"""The transactional outbox against the real broker: a crash inside a transaction leaves
only whole committed batches; the next incarnation fences the old producer, reads back
the committed mark and re-publishes the rest, so read_committed consumers see each once."""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition

from poa.kafka_local import reset_topics
from streams import topics
from streams.outbox import TransactionalOutbox, published_mark

pytestmark = pytest.mark.kafka


def credits(n0: int, n1: int) -> list[tuple[str, str, bytes]]:
    return [(topics.REWARDS, f"acct{i % 4}", json.dumps({"entry_id": f"e{i}", "amount": i}).encode())
            for i in range(n0, n1)]


def read_all(bootstrap: str, isolation: str) -> list[str]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                      isolation_level=isolation)
    try:
        parts = [TopicPartition(topics.REWARDS, p) for p in sorted(c.partitions_for_topic(topics.REWARDS))]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        end = c.end_offsets(parts)
        out = []
        while any(c.position(tp) < end[tp] for tp in parts):
            for recs in c.poll(timeout_ms=500).values():
                out += [json.loads(r.value)["entry_id"] for r in recs]
        return sorted(out)
    finally:
        c.close()


def test_crash_inside_a_transaction_then_recovery_publishes_each_message_once(kafka_bootstrap):
    reset_topics(kafka_bootstrap, 3)
    tid = "poa-out.test." + uuid.uuid4().hex[:8]

    async def run():
        first = await TransactionalOutbox(kafka_bootstrap, tid).start()
        assert published_mark(kafka_bootstrap, topics.OUTPUT_TOPICS) == 0
        assert await first.publish(credits(0, 20), seq=5) == 20
        # batch 2 is in flight when the worker dies: sent, flushed, never committed
        await first.producer.begin_transaction()
        for topic, key, value in credits(20, 35):
            await first.producer.send(topic, key=key.encode(), value=value, headers=[("poa-seq", b"9")])
        await first.producer.flush()

        second = await TransactionalOutbox(kafka_bootstrap, tid).start()  # fences `first`, aborts its txn
        try:
            assert published_mark(kafka_bootstrap, topics.OUTPUT_TOPICS) == 5
            assert await second.publish(credits(20, 35), seq=9) == 15
            assert published_mark(kafka_bootstrap, topics.OUTPUT_TOPICS) == 9
        finally:
            await second.stop()
            await first.stop()
    asyncio.run(run())
    expected = sorted(f"e{i}" for i in range(35))
    assert read_all(kafka_bootstrap, "read_committed") == expected
    # the aborted copies are in the log: a read_uncommitted reader sees batch 2 twice
    uncommitted = read_all(kafka_bootstrap, "read_uncommitted")
    assert len(uncommitted) == 50 and set(uncommitted) == set(expected)
