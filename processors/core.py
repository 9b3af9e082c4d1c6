"""The processing core: one raw message in, table rows and output messages out.

Plain Python with no Faust or Kafka types, so the Faust worker and ``poa replay``
run exactly the same code. Contract of :meth:`Core.process`:

- input: the topic name and the raw message bytes (one event of contract v1);
- output: a :class:`Result` with rows per ClickHouse table (dicts keyed by column)
  and messages for the output topics (poa.rewards, poa.flags, poa.deadletter);
- every accepted or rejected message is logged once in the ``events`` table with a
  monotonically increasing ``seq``; every derived row carries the ``seq`` of the
  message that produced it. Writing ``events`` last makes it the commit marker: rows
  with a ``seq`` above the last logged one are orphans of a crash (see sinks/).
- a message whose key (``event_id``, or a hash of an invalid payload) was seen
  before produces nothing: re-delivery changes nothing;
- valid events are buffered and processed in event-time order (processors/order.py):
  the caller releases them with :meth:`Core.release` up to a watermark;
- an event that references what has not arrived yet (a vote on an unknown
  contribution, a usage of an unknown model, a model whose base is unknown) waits
  and is processed when that arrives; the same log always replays the same way.
- time: rows carry the event's own ``ts``; an invalid message takes the ``ts`` of
  the last valid event, so no wall clock enters the ledger.
- policy: every ledger number comes from the policy schedule (streams/policy.py), the
  policy in force in the open epoch (:attr:`Core.P`); structural ones from the first.
- error boundary: a handler exception while an event is released quarantines that event
  (:meth:`Core.release`): a logged ``quarantine:<event_id>`` row and a dead letter, and the
  state rebuilt from the log without it (``log_source`` + the rows not yet ``written``).
"""
from __future__ import annotations

import hashlib
import heapq
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timezone


from poa_stream.attribution.lsh import NearDupIndex
from poa_stream.attribution.reliability import OnlineDawidSkene
from poa_stream.attribution.spans import SpanIndex
from poa_stream.attribution.velocity import Interner
from poa_stream.settings import Settings
from poa_stream.processors import failpoints
from poa_stream.processors.corpus import CorpusArrays
from poa_stream.processors.epochs import EpochBook
from poa_stream.processors.escrow import Escrow
from poa_stream.processors.pools import Pools
from poa_stream.processors.state import ContributionState, Result, Stats, encode
from poa_stream.processors.handlers_contributions import ContributionHandlers
from poa_stream.processors.handlers_usage import UsageHandlers
from poa_stream.processors.handlers_validations import ValidationHandlers
from poa_stream.processors.intake import IntakeChecks, digest
from poa_stream.processors.messages import deadletter_message, flag_message, reward_message
from poa_stream.processors.order import Watermarks, order_key
from poa_stream.processors.seen import SeenIds
from poa_stream.processors.spam import SpamGuard
from poa_stream.processors.wash import WashWatch
from poa_stream.streams import topics
from poa_stream.streams.policy import Policy, PolicySchedule
from poa_stream.streams.signing import KeyRegistry
from poa_stream.streams.events import Contribution, EventError, Model, Usage, Validation, decode_event

EPOCH0 = datetime(1970, 1, 1, tzinfo=timezone.utc)
QUARANTINE_PREFIX = "quarantine:"
_KEY_PREFIXES = ("invalid", "error", "conflict", "refused", "quarantine")  # log keys, not event ids
MAX_STORED_INVALID_BYTES = 64 << 10  # an invalid message's payload kept in `events`
MAX_CONSECUTIVE_QUARANTINES = 20  # more failures in a row: a bug in the core, not in events
log = logging.getLogger("poa.core")
MAX_DEADLETTER_PAYLOAD = 64 << 10  # bytes of a dead letter's payload kept in the table


class Core(IntakeChecks, ContributionHandlers, ValidationHandlers, UsageHandlers):
    """Stateful processing core. State lives in memory and is rebuilt from the event log.

    The per-type handlers live in processors/handlers_*.py (mixins over this state)."""

    def __init__(self, settings: Settings, schedule: PolicySchedule | None = None):
        self.s = settings
        self.schedule = schedule or PolicySchedule.single(settings.policy())
        base = self.schedule.base  # structural fields: fixed for the store's life
        self._registries: dict[str, KeyRegistry] = {}
        # the store's committed log after a seq (what a rebuild after a handler error replays)
        self.log_source: Callable[[int], Iterable[tuple]] | None = None
        self._unwritten: list[dict] = []  # events rows not yet written (see written())
        self._replaying = False
        self._applying: tuple[str, object] | None = None  # the event a handler is applying
        self._storm = 0  # consecutive quarantines
        # the input is a run's own processing log (`poa replay --in-order`): its events were
        # accepted by their record-time bounds, which a replay cannot re-judge
        self.log_order = False
        self.seq = 0
        self.last_key = ""  # the events-table key logged at ``seq``
        self.restored_seq = 0  # seq of the last event rebuilt from the store's log
        # the state of the newest usable snapshot at or before a seq (see _rebuild)
        self.snapshot_base: Callable[[int], dict | None] | None = None
        self.last_ts = EPOCH0
        # every event id and log key seen, with the digest of an event's canonical payload
        # (bounded memory, exact: processors/seen.py); the request ids reported by usages
        self.ids = SeenIds()
        self.requests = SeenIds()
        self._waiting_models: dict[str, str] = {}  # waiting model id -> the base it waits for
        self._wait_heap: list[tuple[datetime, str]] = []  # (ts, event id) of waiting events
        self.contribs: dict[str, ContributionState] = {}
        self.by_idx: list[ContributionState] = []
        self.by_hash: dict[str, str] = {}
        self.by_datanet: dict[str, list[int]] = {}
        self.models: dict[str, Model] = {}
        self.validators = Interner()
        self.ds = OnlineDawidSkene(
            prior_good=base.ds_prior_good, prior_reliability=base.ds_prior_reliability,
            prior_strength=base.ds_prior_strength, prior_votes=base.ds_prior_votes,
            class_prior_strength=base.ds_class_prior_strength, stake_ref=base.ds_stake_ref,
            w_min=base.ds_w_min, w_max=base.ds_w_max, allow_inverted=base.ds_allow_inverted,
            retro=base.ds_retro, retro_window=base.ds_retro_window)
        self._fee_w: dict[str, float] = {}  # validator -> fee weight at ds.version (see _fee_weight)
        self._fee_w_version = -1
        # the validator fee weights published at the last epoch close, and that epoch (-1: none)
        self.fee_weights: dict[str, float] = {}
        self.fee_weights_epoch = -1
        self.corpus = CorpusArrays(base.span_min_tokens)  # per-contribution numpy columns
        self.pools = Pools()  # datanet pool balances, settled at epoch close
        self.wash = WashWatch()  # per epoch and operator: suspected wash usage (flags)
        self.escrow = Escrow()  # held credit of contributions not yet accepted
        self._lineage_cache: dict[tuple[str, str], list] = {}
        self.guard = SpamGuard(base)
        self.validator_flagged: set[tuple[str, str]] = set()
        # missing reference -> {event id: (topic, event)} in arrival order; event id -> missing
        self.waiting: dict[str, dict[str, tuple[str, object]]] = {}
        self._waiting_key: dict[str, str] = {}
        self.index = SpanIndex(base.span_min_tokens)
        self.neardup = NearDupIndex(base.minhash_num_perm, base.neardup_threshold,
                                    seed=base.minhash_seed)
        # MinHash of ordered word pairs of prose: template siblings (slot-filled copies of one text)
        self.templates = NearDupIndex(base.minhash_num_perm, base.template_jaccard,
                                      seed=base.minhash_seed + 1)
        self.stats = Stats()
        self.buffer: list[tuple[tuple, str, object]] = []  # heap of (order key, topic, event)
        self.buffered: dict[str, tuple[str, object]] = {}
        self._inbox_new: list[str] = []
        self.released_key: tuple | None = None
        self.max_seen_ts: datetime | None = None
        self.marks = Watermarks(self.schedule.base.order_stall_messages,
                                self.schedule.base.order_lateness_s)
        self.book = EpochBook(self.schedule)

    @property
    def P(self) -> Policy:
        """The ledger policy in force: the one of the open epoch (streams/policy.py)."""
        return self.schedule.at(self.book.open)

    def keys_for(self, policy: Policy) -> KeyRegistry:
        reg = self._registries.get(policy.fingerprint())
        if reg is None:
            reg = self._registries[policy.fingerprint()] = KeyRegistry(policy.keys)
        return reg

    # ------------------------------------------------------------------ entry
    def process(self, topic: str, raw: bytes, partition: int = 0, caught_up: bool = False,
                record_ts: datetime | None = None) -> Result:
        """Take one raw message from ``topic``: dead-letter it, or buffer it for release.

        Valid events are processed by :meth:`release` in event-time order
        (:func:`processors.order.order_key`); ``partition`` and ``caught_up`` (this was
        the partition's last available message) feed :attr:`marks`, the watermarks, where
        only a new event counts as progress. ``record_ts``: the Kafka record's timestamp
        (the worker), which bounds the event's time (processors/intake.py); without it (a
        replay) the stream's own event time does. A known ``event_id`` with the same
        payload is a re-delivery (nothing happens); with another payload, a conflict
        (dead-lettered). Refused events are dead-lettered without marking their id seen.
        """
        res, source = Result(), (topic, partition)
        try:
            ev = decode_event(raw)
            if topics.TOPIC_OF_TYPE[ev.type] != topic and topic in topics.INPUT_TOPICS:
                raise EventError(f"event type {ev.type!r} does not belong on topic {topic}; "
                                 f"produce it to {topics.TOPIC_OF_TYPE[ev.type]}", ev.event_id)
            self._check_time(ev, record_ts)
        except EventError as err:
            self.marks.observe(source, None, caught_up)
            key = "invalid:" + hashlib.blake2b(topic.encode() + b"\0" + raw, digest_size=12).hexdigest()
            self._refuse(res, key, err.event_id or key, topic, err.reason, raw, "invalid")
            return res
        payload = encode(ev)
        d = digest(payload)
        known = self.ids.get(ev.event_id)
        if known is not None or ev.event_id in self.ids:
            same = known is None or known == d
            self.marks.observe(source, ev.ts if same else None, caught_up, progress=False)
            if same:
                self.stats.redelivered += 1
            else:
                self._refuse(res, f"conflict:{d:016x}", ev.event_id, topic,
                             f"conflict: event id {ev.event_id!r} was already used for a different "
                             "event; the first one stands (a retry must resend the same event)",
                             payload, "conflict")
            return res
        if reason := self._intake_reason(ev):
            self.marks.observe(source, None, caught_up)
            self._refuse(res, f"refused:{d:016x}", ev.event_id, topic, reason, payload, "rejected")
            return res
        self.marks.observe(source, ev.ts, caught_up)
        self.ids.add(ev.event_id, d)
        self._buffer(topic, ev)
        self._inbox_new.append(ev.event_id)
        return res

    def _refuse(self, res: Result, key: str, event_id: str, topic: str, reason: str,
                payload: bytes, status: str) -> None:
        """Log and dead-letter a message under ``key`` (once: a re-delivery is ignored)."""
        if key in self.ids:
            self.stats.redelivered += 1
            return
        self.stats.rejected += status != "invalid"
        self._log(res, key, "invalid", topic, self._stamp(), _stored(payload), status)
        self._deadletter(res, event_id, topic, reason, payload)

    def internal_error(self, topic: str, raw: bytes, exc: Exception) -> Result:
        """Dead-letter a message whose processing raised (a bug), keeping its payload."""
        res = Result()
        key = "error:" + hashlib.blake2b(topic.encode() + b"\0" + raw, digest_size=12).hexdigest()
        if key not in self.ids:
            self._log(res, key, "invalid", topic, self._stamp(), _stored(raw), "error")
            self._deadletter(res, key, topic, f"internal error: {type(exc).__name__}: {exc}", raw)
        return res

    def _buffer(self, topic: str, ev) -> None:
        self.ids.add(ev.event_id)
        key = order_key(ev)
        if self.released_key is not None and key < self.released_key:
            self.stats.late += 1
        heapq.heappush(self.buffer, (key, topic, ev))
        self.buffered[ev.event_id] = (topic, ev)
        if self.max_seen_ts is None or ev.ts > self.max_seen_ts:
            self.max_seen_ts = ev.ts

    def release(self, watermark: datetime | None) -> Result:
        """Process buffered events with event time before ``watermark`` (None: all), in order.

        Error boundary: an exception while an event is applied quarantines that event (see
        :meth:`_quarantine`) and processing goes on; the core's state is exactly as if the
        event had never been applied, and every other event is processed as usual."""
        res = Result()
        while self.buffer and (watermark is None or self.buffer[0][0][0] < watermark):
            key, topic, ev = heapq.heappop(self.buffer)
            del self.buffered[ev.event_id]
            seq0, released0 = self.seq, self.released_key
            self.released_key = key if self.released_key is None else max(key, self.released_key)
            sub = Result()
            try:
                self._accept(sub, topic, ev)
                self._storm = 0
            except Exception as exc:
                self._storm += 1
                if self._storm > MAX_CONSECUTIVE_QUARANTINES:  # not one bad event: a broken core
                    raise RuntimeError(f"{self._storm} events in a row failed; the last: "
                                       f"{type(exc).__name__}: {exc}") from exc
                log.error("quarantining after a handler error on %s: %s: %s", ev.event_id,
                          type(exc).__name__, exc)
                culprit = self._applying or (topic, ev)
                self._applying = None
                self._rebuild(seq0, released0)
                if culprit[1] is ev:
                    self._quarantine(res, topic, ev, exc)
                else:  # a waiting event failed when ``ev`` released it: quarantine that one,
                    self._quarantine(res, *culprit, exc)  # then process ``ev`` again
                    self._buffer_again(key, topic, ev)
                continue
            res.extend(sub)
        return res

    # ------------------------------------------------------------------ error boundary
    def _quarantine(self, res: Result, topic: str, ev, exc: BaseException) -> None:
        """Log ``ev`` as quarantined (an ``invalid`` events row, status ``quarantined``, its
        payload kept) with a dead letter naming the error; it never changes state again (a
        waiting event is dropped from the waiting list, here and in every replay)."""
        self.stats.quarantined += 1
        key = QUARANTINE_PREFIX + ev.event_id
        raw = encode(ev)
        self._drop_waiting(ev.event_id)
        self._log(res, key, "invalid", topic, ev.ts, raw, "quarantined")
        self._deadletter(res, ev.event_id, topic,
                         f"internal error while applying this {ev.type} event (quarantined, "
                         f"nothing of it was applied): {type(exc).__name__}: {exc}", raw)

    def _wait(self, missing: str, topic: str, ev) -> None:
        self.waiting.setdefault(missing, {})[ev.event_id] = (topic, ev)
        self._waiting_key[ev.event_id] = missing
        self.stats.waiting += 1
        if isinstance(ev, Model):
            self._waiting_models[ev.model_id] = missing.split(":", 1)[1]

    def _drop_waiting(self, event_id: str) -> None:
        key = self._waiting_key.pop(event_id, None)
        if key is None:
            return
        items = self.waiting[key]
        _, ev = items.pop(event_id)
        if not items:
            del self.waiting[key]
        if isinstance(ev, Model):
            self._waiting_models.pop(ev.model_id, None)
        self.stats.waiting -= 1

    def _buffer_again(self, key: tuple, topic: str, ev) -> None:
        heapq.heappush(self.buffer, (key, topic, ev))
        self.buffered[ev.event_id] = (topic, ev)

    def _rebuild(self, seq: int, released_key) -> None:
        """Replace this core's state by one rebuilt from the log up to ``seq`` (the store's
        committed log, then the events rows not written yet), keeping what is not derived
        from the log: the buffered events, the ids seen, the watermarks and the counters."""
        self._unwritten = [r for r in self._unwritten if r["seq"] <= seq]
        log.warning("rebuilding the core's state from the log up to seq %d after a handler error", seq)
        fresh = type(self)(self.s, self.schedule)
        fresh.log_source, fresh.snapshot_base = self.log_source, self.snapshot_base
        base = self.snapshot_base(seq) if self.snapshot_base is not None else None
        if base is not None:  # the newest snapshot at or before seq, then the log after it
            fresh.load_snapshot_state(base)
        committed = self.log_source(fresh.seq) if self.log_source is not None else ()
        last = [fresh.seq]

        def rows():
            for r in committed:
                last[0] = r[0]
                yield r
            for r in self._unwritten:
                if r["seq"] > last[0]:
                    yield (r["seq"], r["event_id"], r["type"], r["topic"], r["ts"], r["payload"])
        fresh.replay_log(rows())
        if fresh.seq != seq:
            raise RuntimeError(f"rebuilding the core after a handler error reached seq {fresh.seq}, "
                               f"not {seq}: the log and the core disagree")
        keep = {k: getattr(self, k) for k in ("buffer", "buffered", "_inbox_new", "marks",
                                               "max_seen_ts", "ids", "stats",
                                               "_unwritten", "_storm")}
        waiting = len(fresh._waiting_key)
        self.__dict__.update(fresh.__dict__)
        self.__dict__.update(keep)
        self.stats.waiting = waiting
        self.released_key = released_key

    def written(self, upto_seq: int | None = None) -> None:
        """The caller stored the events rows up to ``upto_seq`` (default: all so far)."""
        if upto_seq is None:
            self._unwritten = []
        else:
            self._unwritten = [r for r in self._unwritten if r["seq"] > upto_seq]
        self.compact_ids()

    def compact_ids(self) -> None:
        """Compact the seen ids and request ids when due (processors/seen.py); the ids of
        buffered events stay recent, so a snapshot can leave them out."""
        self.ids.compact(self.buffered)
        self.requests.compact()

    def inbox_rows(self) -> list[dict]:
        """Rows for the ``inbox`` table: events that arrived since the last call and are
        still buffered (their offsets will be committed, so they must be stored)."""
        rows = []
        for eid in self._inbox_new:
            if eid in self.buffered:
                topic, ev = self.buffered[eid]
                rows.append({"event_id": eid, "topic": topic, "ts": ev.ts,
                             "payload": encode(ev).decode("utf-8")})
        self._inbox_new = []
        return rows

    def _accept(self, res: Result, topic: str, ev) -> None:
        payload = encode(ev)  # once per event: content and output can be 1 MiB
        if reason := self._admit_reason(ev):  # refused before any state changes
            self.stats.rejected += 1
            self._log(res, ev.event_id, "invalid", topic, ev.ts, payload, "rejected")
            self._deadletter(res, ev.event_id, topic, reason, payload)
            return
        self.last_ts = max(self.last_ts, ev.ts)
        if self.max_seen_ts is None or ev.ts > self.max_seen_ts:
            self.max_seen_ts = ev.ts
        missing = self._missing(ev)
        self._log(res, ev.event_id, ev.type, topic, ev.ts, payload, "waiting" if missing else "ok")
        self._register_admitted(ev, missing)
        # the validator weights the closing epochs' settlements and the next epoch pay by
        published = (self.book.closes(ev.ts) and self.schedule.at(self.book.epoch_of(ev.ts))
                     .validator_fee_weights == "epoch_snapshot")
        if published:
            self._publish_fee_weights(res, ev)
        emissions, closed = self.book.advance(ev.ts, self.seq, self._validator_emission_weight,
                                              self._settle_pools, self.corpus.validated_supply)
        if closed:
            self._flag_validators(res, ev)
            self._flag_wash(res, ev, closed)
        self._book(res, emissions)
        for row in closed:
            res.add("epochs", row)
        if missing:
            self._wait(missing, topic, ev)
        else:
            self._apply(res, topic, ev)
        if closed:
            self._refresh_statuses(res, ev, sweep=not published)
        self._expire_waiting(res, ev.ts)
        self._resolve_escrow(res, ev)

    def _resolve_escrow(self, res: Result, ev) -> None:
        """Release or forfeit the held credit of contributions whose status this event
        changed (processors/escrow.py); forfeited credit joins its datanet's pool."""
        changed, self.corpus.changed = self.corpus.changed, []
        if not changed or not self.escrow.held:
            return
        rows, forfeited = self.escrow.resolve(
            changed, lambda i: self.by_idx[i].status,
            lambda i: (self.by_idx[i].contribution_id, self.by_idx[i].contributor, self.by_idx[i].datanet),
            self.book.booking_epoch(ev.ts), ev.ts, self.seq, ev.event_id)
        for dn, amount in sorted(forfeited.items()):
            self.pools.add(dn, amount, 0.0)
        self._book(res, rows)

    def replay_log(self, rows, out: Result | None = None) -> int:
        """Rebuild state from ``events`` rows (seq, event_id, type, topic, ts, payload) in seq
        order; ``out`` (optional) collects the rows this produces (to verify a snapshot's tail)."""
        self._replaying = True
        try:
            return self._replay_log(rows, out)
        finally:
            self._replaying = False

    # ------------------------------------------------------------------ snapshots
    # not log-derived (or rebuilt on load): left out of a snapshot (processors/snapshots.py)
    _TRANSIENT = frozenset({
        "s", "schedule", "_registries", "log_source", "snapshot_base", "_unwritten",
        "_replaying", "_applying", "_storm", "log_order", "buffer", "buffered", "_inbox_new",
        "marks", "max_seen_ts", "restored_seq", "_lineage_cache", "_fee_w", "_fee_w_version"})

    def snapshot_state(self) -> dict:
        """The state derived from the log up to :attr:`seq` (every row of it stored): what a
        snapshot keeps. Events buffered but not processed are left out (the inbox has them)."""
        if self._unwritten:
            raise RuntimeError(f"{len(self._unwritten)} logged events are not stored yet: a "
                               "snapshot must only hold what the store holds")
        state = {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}
        if self.buffered:  # compaction keeps buffered ids recent (see written())
            state["ids"] = self.ids.without(self.buffered.keys())
        return state

    def load_snapshot_state(self, state: dict) -> None:
        """Become the core a snapshot was taken of (on a fresh core, same schedule)."""
        self.__dict__.update(state)
        self.book.schedule = self.schedule
        self.max_seen_ts = None if self.last_ts == EPOCH0 else self.last_ts
        self.stats.waiting = len(self._waiting_key)

    def _replay_log(self, rows, out: Result | None = None) -> int:
        n = 0
        for seq, event_id, etype, topic, ts, payload in rows:
            if etype == "invalid":
                self.seq, self.last_key = seq, event_id
                if ":" not in event_id or not event_id.split(":", 1)[0] in _KEY_PREFIXES:
                    self.ids.add(event_id, digest(_bytes(payload)))  # an event refused at release
                else:
                    self.ids.add(event_id)
                if event_id.startswith(QUARANTINE_PREFIX):  # its id stays seen: a re-delivery
                    quarantined = event_id[len(QUARANTINE_PREFIX):]  # changes nothing
                    self.ids.add(quarantined, digest(_bytes(payload)))
                    self._drop_waiting(quarantined)
                self.stats.deadlettered += 1
                self.stats.processed += 1
            else:
                ev = decode_event(_bytes(payload))
                self.ids.add(ev.event_id, digest(_bytes(payload)))
                self.released_key = order_key(ev) if self.released_key is None else max(order_key(ev), self.released_key)
                self._accept(out if out is not None else Result(), topic, ev)
                if self.seq != seq:
                    raise RuntimeError(f"event log diverged at seq {seq} ({event_id}): "
                                       f"replay produced seq {self.seq}")
            n += 1
            if n % 4096 == 0:
                self.compact_ids()
        return n

    def load_inbox(self, rows) -> int:
        """Buffer again the stored, not yet processed events: (event_id, topic, payload)."""
        n = 0
        for event_id, topic, payload in rows:
            if event_id not in self.ids:
                ev = decode_event(_bytes(payload))
                self.ids.add(ev.event_id, digest(encode(ev)))
                self._buffer(topic, ev)
                n += 1
        return n

    # ------------------------------------------------------------------ helpers
    def _log(self, res: Result, key: str, etype: str, topic: str, ts: datetime,
             payload: bytes, status: str) -> None:
        self.seq += 1
        self.last_key = key
        self.ids.add(key)
        self.stats.processed += 1
        self.stats.by_type[etype] = self.stats.by_type.get(etype, 0) + 1
        row = {"seq": self.seq, "event_id": key, "type": etype, "topic": topic, "ts": ts,
               "status": status, "payload": payload.decode("utf-8", "backslashreplace")}
        res.add("events", row)
        if not self._replaying:
            self._unwritten.append(row)

    def _deadletter(self, res: Result, event_id: str, topic: str, reason: str, raw: bytes) -> None:
        self.stats.deadlettered += 1
        body = raw[:MAX_DEADLETTER_PAYLOAD].decode("utf-8", "backslashreplace")
        if len(raw) > MAX_DEADLETTER_PAYLOAD:
            body += f"... [truncated: {len(raw)} bytes in all]"
        row = {"event_id": event_id, "topic": topic, "reason": reason, "payload": body,
               "ts": self._stamp(), "seq": self.seq}
        res.add("deadletter", row)
        res.messages.append(deadletter_message(row))

    def _stamp(self) -> datetime:
        """The time of a row no event time speaks for (a dead letter, an unparsable message):
        the latest event time processed, or the policy's genesis before any (never 1970, which
        would stretch every chart and report period back to it). Deterministic."""
        return self.last_ts if self.last_ts != EPOCH0 else self.schedule.base.genesis_ts

    def _missing(self, ev) -> str | None:
        if isinstance(ev, Validation) and ev.contribution_id not in self.contribs:
            return "contribution:" + ev.contribution_id
        if isinstance(ev, Usage) and ev.model_id not in self.models:
            return "model:" + ev.model_id
        if isinstance(ev, Model):
            for b in ev.base_models:
                if b not in self.models:
                    return "model:" + b
        return None

    def _release(self, res: Result, key: str) -> None:
        for topic, ev in list(self.waiting.get(key, {}).values()):
            self._drop_waiting(ev.event_id)
            missing = self._missing(ev)
            if missing:
                self._wait(missing, topic, ev)
            else:
                self._apply(res, topic, ev)

    def _flag_wash(self, res: Result, ev, closed: list[dict]) -> None:
        """Suspected wash usage of each closed epoch (processors/wash.py), as flags."""
        for er in closed:
            for row in self.wash.close(er["epoch"], self.schedule.at(er["epoch"]), er["end"],
                                       ev.event_id, self.seq):
                res.add("flags", row)
                res.messages.append(flag_message(row))

    def _validator_emission_weight(self, validator: str) -> float:
        return self._fee_weight(validator)

    def _settle_pools(self, epoch: int, end: datetime, seq: int) -> tuple[list[dict], int]:
        """The closing epoch's pool settlement (processors/pools.py), under its policy."""
        P = self.schedule.at(epoch)

        def accepting(i: int):
            return self._accepting(self.by_idx[i])
        return self.pools.settle(epoch, end, seq, self.corpus, P.shares_bps, P.treasury_account,
                                 accepting, self._fee_weight, self.book.add_contributor_evidence)

    def _apply(self, res: Result, topic: str, ev) -> None:
        outer, self._applying = self._applying, (topic, ev)
        P = self.P
        if P.require_signatures:
            reason = self.keys_for(P).check(ev, self._static_actor(ev))  # the model is known now
            if reason:
                self._deadletter(res, ev.event_id, topic, reason, encode(ev))
                self._applying = outer
                return
        if isinstance(ev, Contribution):
            self._contribution(res, ev)
        elif isinstance(ev, Validation):
            self._validation(res, ev)
        elif isinstance(ev, Model):
            self._model(res, ev)
        else:
            self._usage(res, ev)
        failpoints.hit("apply", ev)
        self._applying = outer

    def _book(self, res: Result, rows: list[dict]) -> None:
        """Ledger rows: to the table, the reward stream, the stats and the epoch's entries."""
        self.book.add_entries(rows)
        for row in rows:
            res.add("reward_ledger", row)
            key = (row["source"], row["role"])
            self.stats.credits_micro[key] = self.stats.credits_micro.get(key, 0) + row["amount"]
            res.messages.append(reward_message(row))


def _bytes(payload) -> bytes:
    return payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass")


def _stored(payload: bytes) -> bytes:
    """What ``events`` keeps of a refused message: at most MAX_STORED_INVALID_BYTES, the
    truncation stated (the raw message is up to 3 MiB; nothing replays it)."""
    if len(payload) <= MAX_STORED_INVALID_BYTES:
        return payload
    return payload[:MAX_STORED_INVALID_BYTES] + f"... [truncated: {len(payload)} bytes in all]".encode()
