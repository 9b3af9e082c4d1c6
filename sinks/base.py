"""The sink contract, written once for both engines.

A concrete engine implements four primitives: ``command(sql)``, ``query(sql)`` ->
(column names, rows), ``raw(sql, fmt)`` -> bytes, and ``insert(table, columns)`` where
``columns`` maps column name -> list of Python values (str, int, float, None,
datetime with tzinfo, list). Everything else is shared:

- ``write(rows)``: one insert per table, tables in :data:`sinks.ddl.WRITE_ORDER`
  (``events`` last, the commit marker); inserts are synchronous (``async_insert=0``)
  so a write is readable when it returns. A failure raises :class:`SinkError` with
  ``retry_after_s``; the caller retries the same batch (idempotent, see ``recover``).
- ``recover()``: deletes rows whose ``seq`` is above the last committed ``events.seq``
  (an interrupted batch) and returns that seq; call it on start before processing.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from sinks.ddl import DERIVED_TABLES, TABLES, WRITE_ORDER


class SinkError(RuntimeError):
    """A write that did not complete; retry the same batch after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Sink(ABC):
    database: str

    # ---- engine primitives
    @abstractmethod
    def command(self, sql: str) -> None: ...

    @abstractmethod
    def query(self, sql: str) -> tuple[list[str], list[tuple]]: ...

    @abstractmethod
    def raw(self, sql: str, fmt: str | None) -> bytes:
        """Run ``sql``; the output in ``fmt`` (None: the SQL carries its own FORMAT)."""

    @abstractmethod
    def insert(self, table: str, columns: dict[str, list]) -> None: ...

    def close(self) -> None:
        pass

    @abstractmethod
    def use_database(self) -> None:
        """Make ``self.database`` the default for unqualified table names."""

    # ---- shared behaviour
    def ensure_schema(self) -> None:
        self.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        for t in TABLES.values():
            self.command(t.create_sql(self.database))

    def write(self, rows: dict[str, list[dict]]) -> None:
        for name in WRITE_ORDER:
            batch = rows.get(name)
            if not batch:
                continue
            cols = TABLES[name].column_names
            try:
                self.insert(name, {c: [r[c] for r in batch] for c in cols})
            except SinkError:
                raise
            except Exception as exc:  # engine errors become retryable sink errors
                raise SinkError(f"insert into {name} failed: {exc}") from exc

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

    def load_inbox(self) -> list[tuple]:
        """Received but unprocessed events: (event_id, topic, payload) in event-time order."""
        db = self.database
        _, rows = self.query(f"SELECT event_id, topic, payload FROM {db}.inbox WHERE event_id NOT IN "
                             f"(SELECT event_id FROM {db}.events) ORDER BY ts, event_id")
        return rows

    def unpublished_rows(self, mark: int | None = None) -> dict[str, list[dict]]:
        """Rows with output messages and ``seq`` above ``mark`` (default: the ``outbox``
        table's mark; the worker passes the committed mark read back from Kafka)."""
        db = self.database
        if mark is None:
            mark = int(self.scalar(f"SELECT max(seq) FROM {db}.outbox") or 0)
        out = {}
        for table in ("reward_ledger", "flags", "deadletter"):
            cols, rows = self.query(f"SELECT * FROM {db}.{table} WHERE seq > {mark} ORDER BY seq")
            out[table] = [dict(zip(cols, r)) for r in rows]
        return out

    def load_log(self, batch_rows: int = 10_000) -> Iterator[tuple]:
        """The event log in seq order: (seq, event_id, type, topic, ts, payload)."""
        last = 0
        while True:
            _, rows = self.query(
                f"SELECT seq, event_id, type, topic, ts, payload FROM {self.database}.events "
                f"WHERE seq > {last} ORDER BY seq LIMIT {batch_rows}")
            if not rows:
                return
            yield from rows
            last = rows[-1][0]
