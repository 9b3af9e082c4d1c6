"""Output messages (poa.rewards, poa.flags, poa.deadletter) built from table rows.

The same functions serve the core (fresh rows) and the worker's outbox recovery
(rows read back from the store), so a re-published message is byte-identical to the
first one. Consumers deduplicate by the message's identity: ``entry_id`` for rewards,
(``contribution_id``, ``reason``, ``event_id``) for flags, ``event_id`` for dead letters.
"""
from __future__ import annotations

from datetime import datetime, timezone

from streams import topics
from streams.events import canonical_json, format_ts

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


def messages_from_rows(rows: dict[str, list[dict]]) -> list[Message]:
    """Messages for stored rows, ordered by seq then table (rewards, flags, dead letters)."""
    out = []
    for table, build in BUILDERS.items():
        out += [(r["seq"], i, build(r)) for i, r in enumerate(rows.get(table, []))]
    return [m for _, _, m in sorted(out, key=lambda x: (x[0], x[1]))]
