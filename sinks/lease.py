"""One writer per store: a lease with a fencing generation, recorded in the store itself.

Contract:
- :meth:`Lease.acquire` refuses (:class:`StoreLocked`) while another owner's lease is live
  (its last heartbeat is younger than ``ttl_s`` by the store's own clock, and it was not
  released); otherwise it records a new *generation* (previous + 1). A writer with a stable
  ``identity`` (a worker's id, instance id and host) restarted after a crash is the same
  logical writer: it takes over at once, and the old process, should it still live, is
  fenced by the new generation at its next check. Two writers racing for
  the same generation are ordered by the store: the row stored first wins (ties: the smaller
  owner id), the other gets :class:`StoreLocked`.
- The holder renews (a heartbeat row) at least every ``ttl_s / 3``; :meth:`Lease.check`
  runs before every batch is written (sinks/base.py ``write``): it reads the current holder
  back and raises :class:`LeaseLost` (fatal: stop writing, do not acknowledge input) when
  the store names another generation or owner. A holder that could not renew for ``ttl_s``
  (paused, cut off) renews before writing again, and finds out there that it was replaced.
- The generation prefixes every batch key (``g<gen>.b<n>``), so the insert tokens of one
  incarnation never collide with those of another (sinks/base.py).
- :meth:`Lease.release` marks the lease free at a clean stop, so the next writer need not
  wait out the TTL.

Times are the store's (``now64``), never this machine's, except the holder's own
"when did I last renew" (a monotonic clock): writing stops ``ttl_s`` after the last
successful renewal, which is before anyone else may take over.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid

from poa_stream.sinks.base import FatalSinkError, SinkError

LEASE_DDL = """CREATE TABLE IF NOT EXISTS {db}.writer_lease (
  `generation` UInt64, `owner` String, `pid` UInt32, `host` String,
  `acquired` DateTime64(6, 'UTC'), `heartbeat` DateTime64(6, 'UTC'), `released` UInt8
) ENGINE = MergeTree ORDER BY (generation, owner, heartbeat)"""


class StoreLocked(RuntimeError):
    """Another writer holds the store: refuse to start."""


class LeaseLost(FatalSinkError):
    """This writer was replaced by another one: stop writing at once."""


def _q(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Lease:
    def __init__(self, sink, ttl_s: float = 30.0, owner: str | None = None, settle_s: float = 0.3,
                 identity: str | None = None):
        self.sink = sink
        self.ttl_s = float(ttl_s)
        self.settle_s = settle_s
        self.host = socket.gethostname()
        self.identity = identity
        self.owner = owner or (f"{identity}#" if identity else "") + \
            f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.generation = 0
        self._renewed = 0.0  # time.monotonic() of the last successful renewal
        # renew (the heartbeat timer's thread), check (the writer's) and release (a stop or a
        # handover) run on different threads: one at a time, so a release between a renewal's
        # two reads cannot make that renewal see "generation 0" and report a lost lease
        self._lock = threading.RLock()

    # ---- store access (errors classified like writes: transient or fatal)
    def _run(self, what: str, fn, *args):
        try:
            return fn(*args)
        except (SinkError, FatalSinkError):
            raise
        except Exception as exc:
            raise self.sink.classify(exc, f"writer lease: {what}") from exc

    def holder(self) -> dict | None:
        """The current holder: generation, owner, pid, host, heartbeat age (s), released."""
        db = self.sink.database
        _, rows = self._run("read", self.sink.query, f"""
            SELECT generation, owner, any(pid), any(host),
                   dateDiff('millisecond', max(heartbeat), now64(6)) / 1000.0, max(released)
            FROM {db}.writer_lease
            WHERE generation = (SELECT max(generation) FROM {db}.writer_lease)
            GROUP BY generation, owner ORDER BY min(acquired), owner LIMIT 1""")
        if not rows:
            return None
        g, owner, pid, host, age, released = rows[0]
        return {"generation": int(g), "owner": owner, "pid": int(pid), "host": host,
                "age_s": float(age), "released": bool(released)}

    def _insert(self, generation: int, released: int) -> None:
        db = self.sink.database
        self._run("write", self.sink.command,
                  f"INSERT INTO {db}.writer_lease SELECT {int(generation)}, {_q(self.owner)}, "
                  f"{os.getpid()}, {_q(self.host)}, now64(6), now64(6), {int(released)} "
                  "SETTINGS async_insert = 0")

    # ---- the protocol
    def acquire(self) -> int:
        """Take the store or raise :class:`StoreLocked`; returns the new generation."""
        with self._lock:
            return self._acquire()

    def _acquire(self) -> int:
        cur = self.holder()
        same_writer = bool(cur and self.identity and cur["owner"].split("#")[0] == self.identity)
        if (cur and not cur["released"] and cur["age_s"] < self.ttl_s and cur["owner"] != self.owner
                and not same_writer):
            raise StoreLocked(
                f"the store {self.sink.database!r} is held by writer {cur['owner']} (generation "
                f"{cur['generation']}, last heartbeat {cur['age_s']:.1f}s ago): another worker or "
                f"`poa replay` is writing it. Stop that one first, or wait until {self.ttl_s:.0f}s "
                "(POA_STORE_LEASE_TTL_S) after it died.")
        gen = (cur["generation"] if cur else 0) + 1
        self._insert(gen, 0)
        t0 = time.monotonic()
        time.sleep(self.settle_s)  # a racing writer's row lands within this; the store orders us
        won = self.holder()
        if not won or won["generation"] != gen or won["owner"] != self.owner:
            who = won["owner"] if won else "nobody"
            raise StoreLocked(f"the store {self.sink.database!r} was taken by writer {who} at the "
                              f"same moment (generation {gen}); this writer stands down")
        self.generation, self._renewed = gen, t0
        self.sink.generation, self.sink.lease = gen, self
        return gen

    def _verify(self) -> None:
        cur = self.holder()
        if not cur or cur["generation"] != self.generation or cur["owner"] != self.owner:
            who = f"{cur['owner']} (generation {cur['generation']})" if cur else "nobody"
            raise LeaseLost(f"writer lease lost: the store {self.sink.database!r} is now held by "
                            f"{who}, not by this writer ({self.owner}, generation "
                            f"{self.generation}); stopping without writing")

    def renew(self) -> None:
        """Heartbeat: record that the holder is alive, then verify it still holds the store."""
        with self._lock:
            if not self.generation:  # released (a stop, a handover) while this renewal waited
                return
            t0 = time.monotonic()
            self._verify()
            self._insert(self.generation, 0)
            self._verify()
            self._renewed = t0

    def check(self) -> None:
        """Before each batch: the store must still name this writer; renew when due."""
        with self._lock:
            if not self.generation:
                raise LeaseLost("no writer lease held: acquire it before writing")
            if time.monotonic() - self._renewed >= self.ttl_s / 3:
                self.renew()
            else:
                self._verify()

    def check_due(self) -> None:
        """Between the inserts of one batch: renew (and so verify) only when a renewal is due.
        A writer paused long enough to be replaced (``ttl_s``) is always due (``ttl_s / 3``),
        so a pause between two inserts of a batch is caught before the next one; what no
        lease can catch is a pause between this check and the insert right after it (the
        store has no conditional insert to check a fencing token against)."""
        with self._lock:
            if not self.generation:
                raise LeaseLost("no writer lease held: acquire it before writing")
            if time.monotonic() - self._renewed >= self.ttl_s / 3:
                self.renew()

    def release(self) -> None:
        """At a clean stop: mark the lease free (best effort; a dead writer's lease expires)."""
        with self._lock:
            if not self.generation:
                return
            try:
                self._verify()
                self._insert(self.generation, 1)
            except Exception:
                pass
            self.generation = 0
            if self.sink.lease is self:
                self.sink.lease = None
