"""Output messages (poa.rewards, poa.flags, poa.deadletter) built from table rows.

The same functions serve the core (fresh rows) and the worker's outbox recovery
(rows read back from the store), so a re-published message is byte-identical to the
first one. Consumers deduplicate by the message's identity: ``entry_id`` for rewards,
(``contribution_id``, ``reason``, ``event_id``) for flags, ``event_id`` for dead letters.

Canonical order (:func:`positioned_messages`): by the row's ``seq``, then, among the
messages of one seq, by (table rank: rewards < flags < dead letters, key, value bytes).
It depends only on the messages' content, so fresh rows and rows read back from the
store (in any order) give every message the same position ``pos`` within its seq; the
outbox heads each message with its (seq, pos) (streams/outbox.py).
"""
from __future__ import annotations

from datetime import datetime, timezone

from poa_stream.streams import topics
from poa_stream.streams.events import canonical_json, format_ts

Message = tuple[str, str, bytes]  # (topic, key, value)
REWARD_FIELDS = ("entry_id", "epoch", "account", "role", "source", "amount", "ref_event_id", "ts")
FLAG_FIELDS = ("contribution_id", "contributor", "reason", "score", "detail", "ts", "event_id")
DEADLETTER_PAYLOAD_CHARS = 65_536


def _ts(v) -> str:
    if isinstance(v, datetime):
        return format_ts(v if v.tzinfo else v.replace(tzinfo=timezone.utc))
    return str(v)


def _pick(row: dict, fields) -> dict:
    return {f: (_ts(row[f]) if f == "ts" else row[f]) for f in fields}


def reward_message(row: dict) -> Message:
    return topics.REWARDS, row["account"], canonical_json(_pick(row, REWARD_FIELDS))


def flag_message(row: dict) -> Message:
    return topics.FLAGS, row["contribution_id"], canonical_json(_pick(row, FLAG_FIELDS))


def deadletter_message(row: dict) -> Message:
    body = {"event_id": row["event_id"], "topic": row["topic"], "reason": row["reason"],
            "payload": row["payload"][:DEADLETTER_PAYLOAD_CHARS], "ts": _ts(row["ts"])}
    return topics.DEADLETTER, row["event_id"], canonical_json(body)


BUILDERS = {"reward_ledger": reward_message, "flags": flag_message, "deadletter": deadletter_message}


TABLE_RANK = {table: rank for rank, table in enumerate(BUILDERS)}  # rewards < flags < dead letters
Positioned = tuple[int, int, Message]  # (seq, pos within the seq, message)


def positioned_messages(rows: dict[str, list[dict]]) -> list[Positioned]:
    """``(seq, pos, message)`` for the rows of the output tables (``reward_ledger``,
    ``flags``, ``deadletter``; other tables ignored), in canonical order (module doc)."""
    out = []
    for table, build in BUILDERS.items():
        rank = TABLE_RANK[table]
        for r in rows.get(table, ()):
            m = build(r)
            out.append((r["seq"], rank, m[1], m[2], m))
    out.sort(key=lambda x: x[:4])
    res: list[Positioned] = []
    seq, pos = None, 0
    for s, _, _, _, m in out:
        pos = pos + 1 if s == seq else 0
        seq = s
        res.append((s, pos, m))
    return res


def messages_from_rows(rows: dict[str, list[dict]]) -> list[Message]:
    """Messages for rows, in canonical order (see :func:`positioned_messages`)."""
    return [m for _, _, m in positioned_messages(rows)]
