"""The sink contract, written once for both engines.

A concrete engine implements five primitives: ``command(sql)``, ``query(sql)`` ->
(column names, rows), ``raw(sql, fmt)`` -> bytes, ``insert(table, columns, token)`` where
``columns`` maps column name -> list of Python values (str, int, float, None, datetime
with tzinfo, list) and ``token`` is the insert's deduplication token, and ``error_code``
(the ClickHouse error code an engine exception carries, if any). Everything else is shared.

Idempotent batch commits, by construction:

- Every MergeTree table is created with ``non_replicated_deduplication_window`` (sinks/ddl.py)
  and every insert carries ``insert_deduplication_token = <batch key>:<table>``. A batch key
  (:meth:`Sink.next_batch_key`) is ``g<lease generation>.b<n>``: deterministic per writer
  incarnation and write, so a retry of the same batch re-sends the same rows, in the same
  order, under the same tokens, and ClickHouse drops an insert that already landed. The
  generation (one writer per store, :mod:`sinks.lease`) changes at every start, so rows that
  :meth:`recover` deleted can be written again by the next incarnation (ClickHouse keeps a
  deleted block's token: the same token would silently drop the re-insert).
- ``write(rows, key, retry=True)`` first reads what landed: a table whose rows carry ``seq``
  is skipped when a row with a ``seq`` of this batch is already stored (a batch's rows have
  ``seq`` values no other batch of this incarnation has); the others are re-sent with their
  tokens. ``events`` is written last: it is the batch's commit marker.
- Errors are classified: :class:`SinkError` (retry the same batch later: the store or the
  network failed) or :class:`FatalSinkError` (a bug or an impossible value: retrying cannot
  help, the caller must stop before acknowledging its input). Values are checked against the
  column types before any insert (:func:`check_columns`), so an impossible value fails fast
  and no table of the batch is written.
- ``recover()``: deletes rows whose ``seq`` is above the last committed ``events.seq``
  (orphans of an interrupted batch) and returns that seq; call it on start, under the lease.
"""
from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import datetime

import numpy as np

from poa_stream.sinks.ddl import DERIVED_TABLES, TABLES, WRITE_ORDER

# ClickHouse error codes worth retrying: the server is overloaded, restarting, out of
# memory or disk for now, or the connection broke. Anything else is a bug or bad data.
RETRYABLE_CODES = frozenset({
    3, 32, 159, 164, 202, 203, 209, 210, 236, 241, 242, 243, 252, 285, 319, 394, 425, 439,
    473, 999, 1000,
})
_CODE = re.compile(r"Code:\s*(\d+)")

_INT_RANGES = {
    "UInt8": (0, (1 << 8) - 1), "UInt16": (0, (1 << 16) - 1), "UInt32": (0, (1 << 32) - 1),
    "UInt64": (0, (1 << 64) - 1), "Int32": (-(1 << 31), (1 << 31) - 1),
    "Int64": (-(1 << 63), (1 << 63) - 1), "Int128": (-(1 << 127), (1 << 127) - 1),
    "UInt128": (0, (1 << 128) - 1),
}


_INTS: set[type] = {int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64}
_ALLOWED: dict[str, set[type]] = {
    **{t: _INTS for t in _INT_RANGES},
    "String": {str},
    "Float64": _INTS | {float, np.float64},
    "DateTime64": {datetime},
    "Array": {list, tuple},
}


class SinkError(RuntimeError):
    """A write that did not complete because the store or the link to it failed;
    retry the same batch (same key) after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FatalSinkError(RuntimeError):
    """A write that can never succeed (a bug, an impossible value, a lost lease): stop,
    do not acknowledge the input, fix the cause."""


def _base_type(t: str) -> tuple[str, bool]:
    nullable = False
    if t.startswith("LowCardinality("):
        t = t[len("LowCardinality("):-1]
    if t.startswith("Nullable("):
        t, nullable = t[len("Nullable("):-1], True
    return t, nullable


def check_columns(table: str, columns: dict[str, list]) -> None:
    """Raise :class:`FatalSinkError` naming the table, column, row and value when a value
    cannot be stored in its column's type (an integer out of range, a NULL in a
    non-Nullable column, a string where a number goes): such a batch can never land."""
    types = dict(TABLES[table].columns)
    n = None
    for col, values in columns.items():
        if col not in types:
            raise FatalSinkError(f"{table}: unknown column {col!r}")
        if n is None:
            n = len(values)
        elif len(values) != n:
            raise FatalSinkError(f"{table}.{col}: {len(values)} values for {n} rows")
        base, nullable = _base_type(types[col])
        allowed = _ALLOWED.get(base, _ALLOWED["Array"] if base.startswith("Array(") else
                               _ALLOWED["DateTime64"] if base.startswith("DateTime64") else None)
        seen = set(map(type, values))
        if nullable:
            seen.discard(type(None))
        if allowed is not None and not seen <= allowed:
            bad_t = next(t for t in seen if t not in allowed)
            i = next(i for i, v in enumerate(values) if type(v) is bad_t)
            what = "NULL" if bad_t is type(None) else f"{values[i]!r:.80} ({bad_t.__name__})"
            raise FatalSinkError(f"{table}.{col}: row {i} holds {what}, which a {types[col]} "
                                 "column cannot store")
        if base in _INT_RANGES and values:
            lo, hi = _INT_RANGES[base]
            present = [v for v in values if v is not None]
            if present and (min(present) < lo or max(present) > hi):
                i = next(i for i, v in enumerate(values) if v is not None and not lo <= v <= hi)
                raise FatalSinkError(f"{table}.{col}: value {values[i]} in row {i} does not fit "
                                     f"{base} ({lo}..{hi})")


class Sink(ABC):
    database: str
    generation: int = 0  # lease generation of this writer (sinks/lease.py); 0: no lease held
    lease = None  # sinks.lease.Lease while one is held
    require_lease = False  # refuse every write while no lease is held (the scaled sequence owner)

    # ---- engine primitives
    @abstractmethod
    def command(self, sql: str) -> None: ...

    @abstractmethod
    def query(self, sql: str) -> tuple[list[str], list[tuple]]: ...

    @abstractmethod
    def raw(self, sql: str, fmt: str | None, params: dict | None = None) -> bytes:
        """Run ``sql``; the output in ``fmt`` (None: the SQL carries its own FORMAT).
        ``params``: values of ``{name:Type}`` query parameters (bound by the server)."""

    @abstractmethod
    def insert(self, table: str, columns: dict[str, list], token: str | None = None) -> None:
        """Insert ``columns`` synchronously (readable on return) with
        ``insert_deduplication_token = token``."""

    def close(self) -> None:
        pass

    @abstractmethod
    def use_database(self) -> None:
        """Make ``self.database`` the default for unqualified table names."""

    # ---- error classification
    @staticmethod
    def error_code(exc: BaseException) -> int | None:
        """The ClickHouse error code an engine exception carries (None if none)."""
        code = getattr(exc, "code", None)
        if isinstance(code, int):
            return code
        m = _CODE.search(str(exc))
        return int(m.group(1)) if m else None

    def classify(self, exc: BaseException, what: str) -> Exception:
        """:class:`SinkError` for store and network failures, :class:`FatalSinkError` for the rest."""
        if isinstance(exc, (SinkError, FatalSinkError)):
            return exc
        code = self.error_code(exc)
        if code is not None:
            if code in RETRYABLE_CODES:
                return SinkError(f"{what}: {_first_line(exc)}")
            return FatalSinkError(f"{what}: ClickHouse error {code}: {_first_line(exc)}")
        if self.transient(exc):
            return SinkError(f"{what}: {type(exc).__name__}: {_first_line(exc)}")
        return FatalSinkError(f"{what}: {type(exc).__name__}: {_first_line(exc)}")

    def transient(self, exc: BaseException) -> bool:
        """Whether an exception without a ClickHouse code is a transient failure (network,
        timeouts). Engines extend this with their client's transport exceptions."""
        return isinstance(exc, (ConnectionError, TimeoutError, OSError))

    # ---- shared behaviour
    def ensure_schema(self) -> None:
        """Create what is missing: the database, every table, columns added since a store
        was created, the dedup window on stores created before it, the lease and policy logs."""
        from poa_stream.sinks.lease import LEASE_DDL
        from poa_stream.sinks.policy_log import POLICY_DDL
        db = self.database
        self.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        _, have = self.query(f"SELECT table, name, type FROM system.columns WHERE database = '{db}'")
        have_cols = {(t, c) for t, c, _ in have}
        have_types = {(t, c): typ for t, c, typ in have}
        _, dedup = self.query(f"SELECT name FROM system.tables WHERE database = '{db}' AND "
                              "create_table_query LIKE '%non_replicated_deduplication_window%'")
        dedup_ok = {r[0] for r in dedup}
        for t in TABLES.values():
            self.command(t.create_sql(db))
            for c, typ in t.columns:
                if (t.name, c) not in have_cols and any(n == t.name for n, _ in have_cols):
                    self.command(f"ALTER TABLE {db}.{t.name} ADD COLUMN IF NOT EXISTS `{c}` {typ}")
                elif have_types.get((t.name, c), typ) != typ and typ == "Int128":  # money widened
                    self.command(f"ALTER TABLE {db}.{t.name} MODIFY COLUMN `{c}` {typ} "
                                 "SETTINGS mutations_sync = 2")
            if t.dedup_window and t.name not in dedup_ok:
                self.command(f"ALTER TABLE {db}.{t.name} MODIFY SETTING "
                             f"non_replicated_deduplication_window = {t.dedup_window}")
        self.command(LEASE_DDL.format(db=db))
        self.command(POLICY_DDL.format(db=db))

    def next_batch_key(self) -> str:
        """A fresh, deterministic batch key: ``g<generation>.b<n>`` (n counts this writer's batches)."""
        self._batches = getattr(self, "_batches", 0) + 1
        return f"g{self.generation}.b{self._batches}"

    def write(self, rows: dict[str, list[dict]], key: str | None = None, retry: bool = False) -> None:
        """Write one batch: every table's insert carries the token ``<key>:<table>``,
        ``events`` last. ``retry``: this batch (same ``key``, same rows) was attempted
        before: tables whose rows already landed are skipped. Raises :class:`SinkError`
        (retry later with ``retry=True``) or :class:`FatalSinkError` (stop)."""
        key = key or self.next_batch_key()
        plan = []
        for name in WRITE_ORDER:
            batch = rows.get(name)
            if not batch:
                continue
            try:
                cols = {c: [r[c] for r in batch] for c in TABLES[name].column_names}
            except KeyError as exc:
                raise FatalSinkError(f"{name}: a row lacks column {exc}") from None
            check_columns(name, cols)
            plan.append((name, cols))
        if plan and self.lease is None and self.require_lease:
            raise FatalSinkError("no writer lease held: this worker does not own the sequence")
        if plan and self.lease is not None:
            self.lease.check()  # one writer per store: raises LeaseLost (fatal) when fenced
        for i, (name, cols) in enumerate(plan):
            if retry and self._landed(name, cols):
                continue
            if i and self.lease is not None:
                self.lease.check_due()  # paused mid-batch and replaced: not one insert more
            try:
                self.insert(name, cols, f"{key}:{name}")
            except Exception as exc:
                raise self.classify(exc, f"insert into {name} (batch {key})") from exc

    def _landed(self, table: str, cols: dict[str, list]) -> bool:
        """Whether this batch's rows of ``table`` are stored (tables with ``seq`` only; for
        the others the dedup token decides)."""
        if "seq" not in cols or table not in DERIVED_TABLES + ["events"] or not TABLES[table].landed_by_seq:
            return False
        lo, hi = min(cols["seq"]), max(cols["seq"])
        try:
            n = self.scalar(f"SELECT count() FROM {self.database}.{table} "
                            f"WHERE seq >= {int(lo)} AND seq <= {int(hi)}")
        except Exception as exc:
            raise self.classify(exc, f"reading back {table}") from exc
        return int(n or 0) > 0

    def write_retrying(self, rows: dict[str, list[dict]], *, max_delay_s: float = 30.0,
                       sleep: Callable[[float], None] = time.sleep,
                       log: Callable[[str], None] | None = None) -> str:
        """Write one batch, retrying :class:`SinkError` with backoff (same key, reading what
        landed first) until it lands; :class:`FatalSinkError` propagates. Returns the key."""
        key, attempt = self.next_batch_key(), 0
        while True:
            try:
                self.write(rows, key, retry=attempt > 0)
                return key
            except SinkError as exc:
                attempt += 1
                delay = min(max_delay_s, exc.retry_after_s * attempt)
                if log:
                    log(f"sink write failed (attempt {attempt}), retrying in {delay:.1f}s: {exc}")
                sleep(delay)

    def retrying(self, fn: Callable, what: str, deadline_s: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep,
                 log: Callable[[str], None] | None = None):
        """``fn()``, retried with backoff while it fails with a store or network error (for at
        most ``deadline_s``); anything else (a fatal error, a refusal such as another writer
        holding the store) propagates at once."""
        t0, attempt = time.monotonic(), 0
        while True:
            try:
                return fn()
            except FatalSinkError:
                raise
            except SinkError as exc:
                err = exc
            except Exception as exc:
                if not self.transient(exc) and self.error_code(exc) not in RETRYABLE_CODES:
                    raise
                err = self.classify(exc, what)
            if time.monotonic() - t0 > deadline_s:
                raise err
            attempt += 1
            delay = min(10.0, 0.5 * attempt)
            if log:
                log(f"{what} failed (attempt {attempt}), retrying in {delay:.1f}s: {err}")
            sleep(delay)

    def scalar(self, sql: str):
        _, rows = self.query(sql)
        return rows[0][0] if rows else None

    def last_seq(self) -> int:
        return int(self.scalar(f"SELECT max(seq) FROM {self.database}.events") or 0)

    def recover(self) -> int:
        last = self.last_seq()
        for name in DERIVED_TABLES:
            n = int(self.scalar(f"SELECT count() FROM {self.database}.{name} WHERE seq > {last}") or 0)
            if n:
                self.command(f"ALTER TABLE {self.database}.{name} DELETE WHERE seq > {last} "
                             "SETTINGS mutations_sync = 2")
        return last

    def prune_inbox(self) -> int:
        """Delete inbox rows of events already logged (processed, refused or quarantined);
        returns how many there were. Unprocessed events stay."""
        db = self.database
        if not int(self.scalar(f"SELECT count() FROM {db}.inbox") or 0):
            return 0  # nothing to prune: no scan of the log
        done = (f"event_id IN (SELECT event_id FROM {db}.events) OR "
                f"concat('quarantine:', event_id) IN (SELECT event_id FROM {db}.events)")
        n = int(self.scalar(f"SELECT count() FROM {db}.inbox WHERE {done}") or 0)
        if n:
            self.command(f"ALTER TABLE {db}.inbox DELETE WHERE {done} SETTINGS mutations_sync = 2")
        return n

    def load_merge(self) -> tuple[list[tuple], list[tuple]]:
        """The scaled topology's merge state (processors/merge.py ``Merge.restore``): per
        source (topic, partition, highest accepted offset, frontier), and the held messages
        not done (topic, partition, offset, order time, rank, key, record ts ms, payload)."""
        db = self.database
        _, frontier = self.query(
            f"SELECT src_topic, src_partition, max(src_offset), max(order_us) FROM {db}.merge_log "
            "GROUP BY src_topic, src_partition ORDER BY src_topic, src_partition")
        _, held = self.query(
            f"SELECT src_topic, src_partition, src_offset, order_us, rank, key, record_ts_ms, payload "
            f"FROM {db}.merge_log WHERE done = 0 AND (src_topic, src_partition, src_offset) NOT IN "
            f"(SELECT src_topic, src_partition, src_offset FROM {db}.merge_log WHERE done = 1) "
            "ORDER BY order_us, rank, key, src_topic, src_partition, src_offset")
        return frontier, held

    def prune_merge(self) -> int:
        """Delete the merge rows of processed positions, except each source's highest one
        (it holds the source's offset and frontier); returns how many positions went."""
        db = self.database
        done = (f"(src_topic, src_partition, src_offset) IN (SELECT src_topic, src_partition, src_offset "
                f"FROM {db}.merge_log WHERE done = 1) AND (src_topic, src_partition, src_offset) NOT IN "
                f"(SELECT src_topic, src_partition, max(src_offset) FROM {db}.merge_log "
                "GROUP BY src_topic, src_partition)")
        n = int(self.scalar(f"SELECT count() FROM {db}.merge_log WHERE done = 1 AND {done}") or 0)
        if n:
            self.command(f"ALTER TABLE {db}.merge_log DELETE WHERE {done} SETTINGS mutations_sync = 2")
        return n

    def logged_key(self, seq: int) -> str | None:
        """The events-table key logged at ``seq`` (None: no such row)."""
        _, rows = self.query(f"SELECT event_id FROM {self.database}.events WHERE seq = {int(seq)} LIMIT 1")
        return rows[0][0] if rows else None

    def ledger_after(self, seq: int) -> list[tuple[str, int]]:
        """(entry_id, amount) of the stored ledger rows with ``seq`` above ``seq``, sorted."""
        _, rows = self.query(f"SELECT entry_id, toString(amount) FROM {self.database}.reward_ledger "
                             f"WHERE seq > {int(seq)} ORDER BY entry_id, amount")
        return [(e, int(a)) for e, a in rows]

    def load_inbox(self) -> list[tuple]:
        """Received but unprocessed events: (event_id, topic, payload) in event-time order."""
        db = self.database
        if not int(self.scalar(f"SELECT count() FROM {db}.inbox") or 0):
            return []
        _, rows = self.query(f"SELECT event_id, topic, payload FROM {db}.inbox WHERE event_id NOT IN "
                             f"(SELECT event_id FROM {db}.events) ORDER BY ts, event_id")
        return rows

    def load_log(self, after_seq: int = 0, batch_rows: int = 10_000) -> Iterator[tuple]:
        """The event log after ``after_seq`` in seq order: (seq, event_id, type, topic, ts, payload)."""
        last = int(after_seq)
        while True:
            _, rows = self.query(
                f"SELECT seq, event_id, type, topic, ts, payload FROM {self.database}.events "
                f"WHERE seq > {last} ORDER BY seq LIMIT {batch_rows}")
            if not rows:
                return
            yield from rows
            last = rows[-1][0]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
