"""The transactional outbox against the real broker: a crash inside a transaction leaves
only whole committed chunks; the next incarnation fences the old producer, reads back
the committed mark (seq, pos) and re-publishes the rest, so read_committed consumers see
each once. Messages of the older format (``poa-seq`` only) give a whole-seq mark."""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition

from poa_stream.kafka_local import reset_topics
from poa_stream.streams import topics
from poa_stream.streams.outbox import NO_MARK, WHOLE, TransactionalOutbox, published_mark

pytestmark = pytest.mark.kafka


def credits(n0: int, n1: int, per_seq: int = 4) -> list[tuple[int, int, tuple[str, str, bytes]]]:
    """(seq, pos, message): ``per_seq`` messages per seq, seq = 1 + i // per_seq."""
    return [(1 + i // per_seq, i % per_seq,
             (topics.REWARDS, f"acct{i % 4}", json.dumps({"entry_id": f"e{i}", "amount": i}).encode()))
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
        first = await TransactionalOutbox(kafka_bootstrap, tid, max_messages=8).start()
        assert published_mark(kafka_bootstrap, topics.OUTPUT_TOPICS) == NO_MARK
        # 22 messages in chunks of at most 8: three transactions, the last ends inside seq 6
        assert await first.publish(credits(0, 22)) == 22
        assert (first.transactions, first.mark) == (3, (6, 1))
        assert published_mark(kafka_bootstrap, topics.OUTPUT_TOPICS) == (6, 1)
        # the next chunk is in flight when the worker dies: sent, flushed, never committed
        await first.producer.begin_transaction()
        for seq, pos, (topic, key, value) in credits(22, 30):
            await first.producer.send(topic, key=key.encode(), value=value,
                                      headers=[("poa-seq", str(seq).encode()), ("poa-pos", str(pos).encode())])
        await first.producer.flush()

        second = await TransactionalOutbox(kafka_bootstrap, tid).start()  # fences `first`, aborts its txn
        try:
            assert published_mark(kafka_bootstrap, topics.OUTPUT_TOPICS) == (6, 1)
            assert await second.publish(credits(22, 35)) == 13
            assert published_mark(kafka_bootstrap, topics.OUTPUT_TOPICS) == (9, 2)
            assert second.transactions == 1
        finally:
            await second.stop()
            await first.stop()
    asyncio.run(run())
    expected = sorted(f"e{i}" for i in range(35))
    assert read_all(kafka_bootstrap, "read_committed") == expected
    # the aborted copies are in the log: a read_uncommitted reader sees e22..e29 twice
    uncommitted = read_all(kafka_bootstrap, "read_uncommitted")
    assert len(uncommitted) == 43 and set(uncommitted) == set(expected)


def test_legacy_messages_without_a_position_mark_their_whole_seq(kafka_bootstrap):
    """A message of the older format (one ``poa-seq`` per batch, no ``poa-pos``) means the
    batch up to that seq is committed: the mark is (seq, WHOLE), above any position."""
    reset_topics(kafka_bootstrap, 3)

    async def run():
        out = await TransactionalOutbox(kafka_bootstrap, "poa-out.test." + uuid.uuid4().hex[:8]).start()
        try:
            async with out.producer.transaction():
                for _, _, (topic, key, value) in credits(0, 6):
                    await out.producer.send(topic, key=key.encode(), value=value, headers=[("poa-seq", b"7")])
            assert published_mark(kafka_bootstrap, topics.OUTPUT_TOPICS) == (7, WHOLE)
            assert (7, 3) < (7, WHOLE) < (8, 0)
            assert await out.publish([(8, 0, credits(6, 7)[0][2])]) == 1
            assert published_mark(kafka_bootstrap, topics.OUTPUT_TOPICS) == (8, 0)
        finally:
            await out.stop()
    asyncio.run(run())
