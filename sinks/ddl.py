"""Table definitions: columns, engines and sort keys, shared by both engines.

Every derived table carries ``seq``: the position in the ``events`` log of the
message that produced the row. ``events`` is written last in every batch, so rows
with a ``seq`` above ``max(events.seq)`` are orphans of an interrupted batch and are
removed on start (:meth:`sinks.base.Sink.recover`). Tables whose rows are updated
(``contributions``, ``models``) are ReplacingMergeTree on ``version``: read them with
``FINAL``. The ledger is a plain MergeTree: sum it with ``GROUP BY``. ``inbox`` holds
events received but not yet processed (waiting for the event-time watermark);
those whose ``event_id`` is in ``events`` are done. ``outbox`` records up to which
``seq`` the output messages were delivered to Kafka (written after delivery).

Every table keeps the block tokens of its last ``dedup_window`` inserts
(``non_replicated_deduplication_window``): an insert repeating a recent token is dropped,
which makes a retried batch idempotent (sinks/base.py). The writer lease table is in
sinks/lease.py.
"""
from __future__ import annotations

from dataclasses import dataclass

TS = "DateTime64(3, 'UTC')"
LC = "LowCardinality(String)"
# Money (micro-units): Int128, so that sum() over any realistic number of maximum fees
# (2**53 each) cannot overflow: ClickHouse sums Int64 in Int64 and wraps silently.
MONEY = "Int128"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    engine: str
    order_by: str
    partition_by: str | None = None
    dedup_window: int = 1000  # non_replicated_deduplication_window (0: none); see sinks/base.py
    landed_by_seq: bool = True  # a retry finds this table's rows of a batch by their seq range

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def create_sql(self, database: str) -> str:
        cols = ",\n  ".join(f"`{c}` {t}" for c, t in self.columns)
        part = f"\nPARTITION BY {self.partition_by}" if self.partition_by else ""
        settings = (f"\nSETTINGS non_replicated_deduplication_window = {self.dedup_window}"
                    if self.dedup_window else "")
        return (f"CREATE TABLE IF NOT EXISTS {database}.{self.name} (\n  {cols}\n)\n"
                f"ENGINE = {self.engine}{part}\nORDER BY {self.order_by}{settings}")


TABLES: dict[str, Table] = {t.name: t for t in [
    Table("contributions", (
        ("contribution_id", "String"), ("contributor", "String"), ("datanet", LC), ("kind", LC),
        ("ts", TS), ("status", LC), ("duplicate_of", "String"), ("quality", "Nullable(Float64)"),
        ("content_hash", "String"), ("tokens", "UInt32"), ("license", LC), ("stake", MONEY),
        ("version", "UInt64"), ("event_id", "String"), ("seq", "UInt64")),
        "ReplacingMergeTree(version)", "contribution_id"),
    Table("flags", (
        ("contribution_id", "String"), ("contributor", "String"), ("reason", LC),
        ("score", "Float64"), ("detail", "String"), ("ts", TS), ("event_id", "String"),
        ("seq", "UInt64")),
        "MergeTree", "(reason, ts, contribution_id)"),
    Table("validations", (
        ("validator", "String"), ("contribution_id", "String"), ("verdict", LC),
        ("quality", "Nullable(Float64)"), ("stake", MONEY), ("ts", TS),
        ("event_id", "String"), ("seq", "UInt64")),
        "MergeTree", "(contribution_id, ts, validator)"),
    Table("validator_scores", (
        ("validator", "String"), ("reliability", "Float64"), ("votes", "UInt32"), ("ts", TS),
        ("event_id", "String"), ("seq", "UInt64")),
        "MergeTree", "(validator, ts)"),
    # the validator fee weights published at each epoch close (policy validator_fee_weights):
    # payments in epoch `epoch + 1` use them (processors/handlers_validations.py)
    Table("validator_weights", (
        ("epoch", "UInt32"), ("validator", "String"), ("fee_weight", "Float64"),
        ("reliability", "Float64"), ("votes", "UInt32"), ("ts", TS), ("event_id", "String"),
        ("seq", "UInt64")),
        "MergeTree", "(epoch, validator)"),
    Table("models", (
        ("model_id", "String"), ("operator", "String"), ("method", LC),
        ("base_models", "Array(String)"), ("datanets", "Array(String)"),
        ("datanet_weights", "Array(Float64)"), ("inherit", "Float64"), ("ts", TS),
        ("event_id", "String"), ("seq", "UInt64")),
        "ReplacingMergeTree(seq)", "model_id"),
    Table("usage", (
        ("request_id", "String"), ("model_id", "String"), ("fee", MONEY),
        ("output_tokens", "UInt32"), ("matched_tokens", "UInt32"), ("evidence", LC),
        ("contributions", "UInt32"), ("lineage_share", "Float64"), ("ts", TS),
        ("event_id", "String"), ("seq", "UInt64")),
        "MergeTree", "(model_id, ts, request_id)"),
    Table("attributions", (
        ("request_id", "String"), ("model_id", "String"), ("contribution_id", "String"),
        ("contributor", "String"), ("datanet", LC), ("via_model", "String"), ("weight", "Float64"),
        ("evidence", LC),
        ("ts", TS), ("event_id", "String"), ("seq", "UInt64")),
        "MergeTree", "(model_id, ts, request_id, contribution_id)"),
    Table("reward_ledger", (
        ("entry_id", "String"), ("epoch", "UInt32"), ("account", "String"), ("role", LC),
        ("source", LC), ("amount", MONEY), ("ref_event_id", "String"), ("ts", TS),
        ("seq", "UInt64")),
        "MergeTree", "(account, epoch, entry_id)"),
    Table("epochs", (
        ("epoch", "UInt32"), ("start", TS), ("end", TS), ("budget", MONEY),
        ("carried_in", MONEY), ("emitted", MONEY), ("carried_out", MONEY),
        ("fee_rewards", MONEY), ("emission_rewards", MONEY), ("pool_settled", MONEY),
        ("pool_carried", MONEY), ("entries", "UInt32"),
        ("merkle_root", "String"), ("policy_fingerprint", "String"), ("seq", "UInt64")),
        "MergeTree", "epoch"),
    Table("deadletter", (
        ("event_id", "String"), ("topic", LC), ("reason", "String"), ("payload", "String"),
        ("ts", TS), ("seq", "UInt64")),
        "MergeTree", "(ts, seq)"),
    Table("inbox", (
        ("event_id", "String"), ("topic", LC), ("ts", TS), ("payload", "String")),
        "MergeTree", "(ts, event_id)"),
    Table("pipeline_metrics", (
        ("ts", TS), ("worker", LC), ("topic", LC), ("messages", "UInt32"), ("deadlettered", "UInt32"),
        ("released", "UInt32"), ("buffered", "UInt32"), ("lag", "Int64"), ("batch_ms", "Float64"),
        ("e2l_p50_ms", "Float64"), ("e2l_p99_ms", "Float64"), ("e2l_max_ms", "Float64")),
        "MergeTree", "(topic, ts)", "toYYYYMMDD(ts)"),
    Table("outbox", (("seq", "UInt64"),), "MergeTree", "seq"),
    # the scaled topology's merge (processors/merge.py): per accepted input position a held
    # row (payload base64, seq 0) and, once processed, a done row (seq of its processing);
    # order times in microseconds since the epoch (exact on both engines)
    Table("merge_log", (
        ("src_topic", LC), ("src_partition", "UInt32"), ("src_offset", "Int64"),
        ("order_us", "Int64"), ("rank", "Int64"), ("key", "String"),
        ("record_ts_ms", "Int64"), ("payload", "String"), ("done", "UInt32"), ("seq", "UInt64")),
        "MergeTree", "(src_topic, src_partition, src_offset, done)", landed_by_seq=False),
    Table("events", (
        ("seq", "UInt64"), ("event_id", "String"), ("type", LC), ("topic", LC), ("ts", TS),
        ("status", LC), ("payload", "String")),
        "MergeTree", "seq"),
]}

# Written last: the commit marker of a batch.
WRITE_ORDER: list[str] = [n for n in TABLES if n != "events"] + ["events"]
DERIVED_TABLES: list[str] = [n for n in TABLES if n not in ("events", "inbox", "outbox", "pipeline_metrics")]
