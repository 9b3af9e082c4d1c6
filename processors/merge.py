"""Deterministic merge of the input partitions: the order that decides the ledger.

The scaled topology (processors/scaled.py) has many intake workers forwarding the input
partitions into one sequence; how their messages interleave there depends on timing, on
which worker owns which partition and on crashes. This module turns that interleaving
into one order that depends only on the input log:

- A *source* is one input partition (topic, partition). Each forwarded message carries
  its source position (offset). Per source, only positions above the highest one seen
  are accepted (``hi``): re-forwarded messages (a retry, a zombie intake worker that lost
  the partition, a re-read after a crash) are dropped, so every source's accepted
  messages are exactly its log, in offset order, each once (forwarders keep offset order).
- The source's *frontier* ``F`` is the largest order time it accepted. A message with
  event time ``ts`` gets the order time ``t = max(ts, F)`` (an unparsable one: ``t = F``),
  then ``F = t``. So a source's order times never decrease, and a message that is late
  within its own partition is placed at its partition's frontier: a fact of the log.
- The *watermark* ``W`` is the smallest frontier over all sources (none while a source
  has delivered nothing). Messages are released in the order
  ``(t, type rank, event id, topic, partition, offset)`` once ``t < W``. Every message
  still to come from a source has ``t >= F_source >= W``, so no release can be overtaken:
  the released order is the sort of the whole log by that key, whatever the arrival order.
- A *tick* on a source (``tick(source, T)``) is a message in the source's log saying
  "nothing before T follows": it moves ``F`` like an event would. The sequence owner
  appends ticks to input partitions that hold the watermark back when nothing has moved
  for a while (an idle partition); since the tick is in the log, every later reading of
  the log takes the same decision.

- A *member* is a source the watermark waits for: every input partition when the merge
  began (persisted as ``merge_log`` rows). A partition added to an input topic later
  (the topic grew) *joins*: its messages are held untimed and the watermark waits
  (nothing is released) until its *join marker*, a tick record with the ``poa-join``
  header that the owner appends to that partition at ``J``, the smallest member
  frontier (every released message has ``t < J``). At the first marker in the partition
  the source becomes a member with frontier ``J``, and its held messages are timed in
  offset order from there. So a joined source's messages all sort after what was released
  before it joined, and since the marker is in the log, the offline merge (which treats a
  source whose log holds a join marker as joining at its first one) decides the same.
- Ticks persist the frontier they move (a ``merge_log`` row), so a restart resumes every
  frontier where the log left it, not at its last message.

Pure Python, no Kafka: the worker, the offline check (:func:`merged_order`) and the tests
run the same code. Times are timezone-aware UTC datetimes (microseconds).
"""
from __future__ import annotations

import base64
import heapq
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from collections.abc import Iterable, Iterator

from poa_stream.processors.order import TYPE_RANK

Source = tuple[str, int]
EPOCH0 = datetime(1970, 1, 1, tzinfo=timezone.utc)
INVALID_RANK = -1  # unparsable messages sort before events at the same order time
TICK_HEADER = "poa-tick"  # Kafka header of a tick record on an input partition (value: ISO time)
JOIN_HEADER = "poa-join"  # with a tick: the partition's join marker (value: b"1")
PENDING_US = -1  # merge_log order_us of a message held for its source's join (not yet timed)
MEMBER_OFFSET = -1  # merge_log src_offset of the row that makes a source a member at the start
ENVELOPE_VERSION = 2
ONE_US = timedelta(microseconds=1)
PACK_MAX_BYTES = 1 << 20  # envelopes per sequence record (the topics and producer allow 4 MiB)


@dataclass(frozen=True)
class Envelope:
    """One input message as the intake stage forwards it (contract v2, internal topic).

    ``etype``/``event_id``/``ts``: what intake decoded (``None``: the payload is invalid;
    the sequence's core dead-letters it with the reason). ``tick``: a tick record (no
    payload). ``record_ts_ms``: the Kafka record's timestamp (bounds the event's time)."""
    topic: str
    partition: int
    offset: int
    raw: bytes
    record_ts_ms: int | None = None
    etype: str | None = None
    event_id: str | None = None
    ts: datetime | None = None
    tick: datetime | None = None
    join: bool = False  # a tick that is its partition's join marker (header ``j``)

    @property
    def source(self) -> Source:
        return (self.topic, self.partition)

    def encode(self) -> bytes:
        """The header line (``n``: the payload's length in bytes) and the raw bytes; records
        of the sequence topic hold one or more of these back to back (:func:`pack`)."""
        head = {"v": ENVELOPE_VERSION, "s": self.topic, "p": self.partition, "o": self.offset,
                "r": self.record_ts_ms, "t": self.etype, "id": self.event_id,
                "ts": _iso(self.ts), "tick": _iso(self.tick), "n": len(self.raw)}
        if self.join:
            head["j"] = 1
        return json.dumps(head, separators=(",", ":")).encode() + b"\n" + self.raw

    @classmethod
    def decode(cls, data: bytes) -> "Envelope":
        """One envelope (the whole of ``data``)."""
        envs = cls.decode_all(data)
        if len(envs) != 1:
            raise ValueError(f"{len(envs)} envelopes where one was expected")
        return envs[0]

    @classmethod
    def decode_all(cls, data: bytes) -> list["Envelope"]:
        """Every envelope of a sequence record, in order. A header without ``n`` takes the
        rest of the record as its payload (the first v2 records held one envelope each)."""
        out, pos, end = [], 0, len(data)
        while pos < end:
            nl = data.find(b"\n", pos)
            if nl < 0:
                raise ValueError("an envelope header without its end of line")
            h = json.loads(data[pos:nl])
            if h.get("v") != ENVELOPE_VERSION:
                raise ValueError(f"envelope version {h.get('v')!r} is not {ENVELOPE_VERSION}")
            n = h.get("n")
            stop = end if n is None else nl + 1 + int(n)
            if stop > end:
                raise ValueError(f"an envelope of {n} bytes runs past the record's end")
            out.append(cls(h["s"], int(h["p"]), int(h["o"]), bytes(data[nl + 1:stop]), h.get("r"),
                           h.get("t"), h.get("id"), _dt(h.get("ts")), _dt(h.get("tick")), bool(h.get("j"))))
            pos = stop
        return out


def pack(envelopes: Iterable[Envelope], max_bytes: int = PACK_MAX_BYTES) -> list[bytes]:
    """Sequence records for ``envelopes``, in order: as many back to back per record as fit
    in ``max_bytes`` (one larger than that travels alone). Intake sends one record per
    pack, not one per input message: the sequence topic carries a fraction of the messages."""
    records, cur, size = [], [], 0
    for e in envelopes:
        b = e.encode()
        if cur and size + len(b) > max_bytes:
            records.append(b"".join(cur))
            cur, size = [], 0
        cur.append(b)
        size += len(b)
    if cur:
        records.append(b"".join(cur))
    return records


def tick_of(headers) -> datetime | None:
    """The tick time a Kafka record's headers carry (``poa-tick``), or None: not a tick.
    ``headers``: a list of (key, bytes) pairs or a mapping (Faust gives either)."""
    if not headers:
        return None
    items = headers.items() if hasattr(headers, "items") else headers
    for k, v in items:
        if (k.decode() if isinstance(k, bytes) else k) == TICK_HEADER:
            try:
                return _utc(v.decode() if isinstance(v, bytes) else v)
            except ValueError:
                return None
    return None


def join_of(headers) -> bool:
    """Whether a Kafka record's headers carry the join marker header (``poa-join``)."""
    if not headers:
        return False
    items = headers.items() if hasattr(headers, "items") else headers
    return any((k.decode() if isinstance(k, bytes) else k) == JOIN_HEADER for k, _ in items)


def invalid_key(topic: str, raw: bytes) -> str:
    """The log key of an unparsable message (the same as processors/core.py gives it)."""
    return "invalid:" + hashlib.blake2b(topic.encode() + b"\0" + raw, digest_size=12).hexdigest()


@dataclass(frozen=True, order=True)
class Held:
    """An accepted message waiting for the watermark; ordered by its merge key."""
    t: datetime
    rank: int
    key: str
    topic: str
    partition: int
    offset: int
    raw: bytes = b""
    record_ts_ms: int | None = None

    def row(self, seq: int, done: bool) -> dict:
        """A ``merge_log`` row (sinks/ddl.py): held (with the payload) or done (without)."""
        return {"src_topic": self.topic, "src_partition": self.partition, "src_offset": self.offset,
                "order_us": to_us(self.t), "rank": self.rank, "key": self.key,
                "record_ts_ms": -1 if self.record_ts_ms is None else self.record_ts_ms,
                "payload": "" if done else base64.b64encode(self.raw).decode("ascii"),
                "done": int(done), "seq": seq}


class Merge:
    """The merge state of the sequence: the member sources, per source the highest accepted
    offset and the frontier, the held messages, and the messages of sources waiting to join.
    ``sources``: the members (:meth:`begin` at the first start, :meth:`restore` after it)."""

    def __init__(self, sources: Iterable[Source] = ()):
        self.hi: dict[Source, int] = {}
        self.frontier: dict[Source, datetime] = {}
        self.sources: set[Source] = set(sources)
        self.heap: list[Held] = []
        self.pending: dict[Source, list[Envelope]] = {}  # a joining source's messages, untimed
        self.pending_hi: dict[Source, int] = {}
        self.new_held: list[Held] = []  # accepted since the last take_rows()
        self.new_rows: list[dict] = []  # member, tick and pending rows since the last take_rows()
        self.released: list[tuple[Held, int]] = []  # (held, seq after it) since take_rows()
        self.dropped = 0  # re-forwarded positions
        self.joined = 0  # sources that joined after the start

    def begin(self, sources: Iterable[Source]) -> None:
        """The first start of a sequence: ``sources`` (every input partition now) are the
        members, each persisted by a row (offset -1) so a restart knows a later one joined."""
        for src in sorted(set(sources)):
            self.sources.add(src)
            self.new_rows.append(_position_row(src, MEMBER_OFFSET, EPOCH0, "member", done=True))

    # ------------------------------------------------------------------ input
    def accept(self, env: Envelope) -> bool:
        """Take one forwarded message; False when its position was seen (nothing changes)."""
        src = env.source
        if src not in self.sources:
            if env.tick is not None and env.join:
                return self._join(env)
            if env.offset <= self.pending_hi.get(src, -1):
                self.dropped += 1
                return False
            self.pending_hi[src] = env.offset  # held untimed: the watermark waits for the join
            self.pending.setdefault(src, []).append(env)
            self.new_rows.append({**_position_row(src, env.offset, None, "pending", done=False),
                                  "payload": base64.b64encode(env.encode()).decode("ascii")})
            return True
        if env.offset <= self.hi.get(src, -1):
            self.dropped += 1
            return False
        self.hi[src] = env.offset
        f = self.frontier.get(src)
        if env.tick is not None:
            t = env.tick if f is None else max(env.tick, f)
            self.frontier[src] = t
            self.new_rows.append(_position_row(src, env.offset, t, "tick", done=True))
            return True
        base = env.ts if env.etype is not None else None
        t = max(base, f) if (base is not None and f is not None) else (base or f or EPOCH0)
        self.frontier[src] = t
        rank = TYPE_RANK.get(env.etype, INVALID_RANK) if env.etype is not None else INVALID_RANK
        key = env.event_id if env.etype is not None else invalid_key(env.topic, env.raw)
        held = Held(t, rank, key, env.topic, env.partition, env.offset, env.raw, env.record_ts_ms)
        heapq.heappush(self.heap, held)
        self.new_held.append(held)
        return True

    def _join(self, marker: Envelope) -> bool:
        """A source's first join marker: a member from ``J = marker.tick`` on; the messages
        it held are timed in offset order from there, then the marker counts as a tick."""
        src = marker.source
        self.sources.add(src)
        self.frontier[src] = marker.tick
        self.pending_hi.pop(src, None)
        for env in self.pending.pop(src, []):
            self.accept(env)
        self.accept(marker)
        self.joined += 1
        return True

    def join_time(self) -> datetime:
        """``J`` for a join marker written now: the smallest member frontier (EPOCH0 while a
        member has none). Every message released so far has ``t`` below it."""
        if not self.sources or any(s not in self.frontier for s in self.sources):
            return EPOCH0
        return min(self.frontier[s] for s in self.sources)

    def watermark(self) -> datetime | None:
        """min frontier over the members; None while a member has delivered nothing or a
        source waits to join."""
        if self.pending or not self.sources or any(s not in self.frontier for s in self.sources):
            return None
        return min(self.frontier[s] for s in self.sources)

    def ready(self) -> Iterator[Held]:
        """Pop the held messages the watermark has passed, in merge order."""
        w = self.watermark()
        while w is not None and self.heap and self.heap[0].t < w:
            yield heapq.heappop(self.heap)

    def drain(self) -> Iterator[Held]:
        """Everything held, in merge order (the end of a finite log: offline use only)."""
        while self.heap:
            yield heapq.heappop(self.heap)

    def done(self, held: Held, seq: int) -> None:
        """``held`` was processed; ``seq`` is the core's seq after it."""
        self.released.append((held, seq))

    # ------------------------------------------------------------------ ticks
    def lagging(self) -> tuple[datetime | None, list[Source]]:
        """(T, sources): the tick that would release everything held — one microsecond
        past the newest held order time — and the members whose frontier is below it."""
        if not self.heap:
            return None, []
        t = max(h.t for h in self.heap) + ONE_US
        return t, sorted(s for s in self.sources if self.frontier.get(s, EPOCH0 - ONE_US) < t)

    # ------------------------------------------------------------------ persistence
    def take_rows(self) -> list[dict]:
        """``merge_log`` rows since the last call: new held messages (seq 0: never orphans),
        member, tick and pending rows, and done markers (with the seq of their processing:
        orphans of an interrupted batch are removed with the batch, sinks/base.py ``recover``)."""
        rows = self.new_rows + [h.row(0, False) for h in self.new_held]
        rows += [h.row(seq, True) for h, seq in self.released]
        self.new_held, self.released, self.new_rows = [], [], []
        return rows

    def restore(self, frontier_rows: Iterable[tuple], held_rows: Iterable[tuple]) -> None:
        """From the store: (topic, partition, max offset, max order time in µs) per source, and
        the held messages (topic, partition, offset, order µs, rank, key, record ts ms, payload b64).
        A source whose rows are all pending (order -1) is still waiting to join; a position
        held pending and then timed (its source joined) is held timed."""
        for topic, part, hi, t in frontier_rows:
            src = (topic, int(part))
            if int(t) == PENDING_US:
                self.pending_hi[src] = int(hi)
                continue
            self.sources.add(src)
            self.hi[src] = int(hi)
            self.frontier[src] = from_us(t)
        timed: dict[tuple, tuple] = {}
        pending: dict[tuple, Envelope] = {}
        for topic, part, off, t, rank, key, rts, payload in held_rows:
            pos = (topic, int(part), int(off))
            if int(t) == PENDING_US:
                pending[pos] = Envelope.decode(base64.b64decode(payload))
            elif pos not in timed or int(t) > timed[pos][0]:
                timed[pos] = (int(t), int(rank), key, rts, payload)
        for (topic, part, off), (t, rank, key, rts, payload) in timed.items():
            heapq.heappush(self.heap, Held(from_us(t), rank, key, topic, part, off,
                                           base64.b64decode(payload), None if int(rts) < 0 else int(rts)))
        for pos in sorted(pending):
            src = pos[:2]
            if src not in self.sources:
                self.pending.setdefault(src, []).append(pending[pos])


def _position_row(src: Source, offset: int, t: datetime | None, key: str, done: bool) -> dict:
    """A ``merge_log`` row for a position that holds no message to process: a member row, a
    tick (done, with the frontier it moved to) or a pending message (``t`` None)."""
    return {"src_topic": src[0], "src_partition": src[1], "src_offset": offset,
            "order_us": PENDING_US if t is None else to_us(t), "rank": 0, "key": key,
            "record_ts_ms": -1, "payload": "", "done": int(done), "seq": 0}


def merged_order(per_source: dict[Source, list[Envelope]]) -> list[Held]:
    """The order the sequence processes a finite log in: each source's envelopes in offset
    order, merged (the offline reference for tests and audits). A source whose log holds a
    join marker joined after the start (at its first marker); the others are the members."""
    joined = {s for s, envs in per_source.items() if any(e.join and e.tick is not None for e in envs)}
    m = Merge(s for s in per_source if s not in joined)
    for envs in per_source.values():
        for e in envs:
            m.accept(e)
    return list(m.drain())


def to_us(t: datetime) -> int:
    """Microseconds since the epoch (exact: how ``merge_log`` stores order times)."""
    d = t - EPOCH0
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def from_us(us) -> datetime:
    return EPOCH0 + timedelta(microseconds=int(us))


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(timezone.utc).isoformat()


def _dt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


def _utc(t) -> datetime:
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
