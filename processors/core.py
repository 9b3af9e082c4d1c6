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
"""
from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from attribution.lsh import NearDupIndex
from attribution.reliability import OnlineDawidSkene
from attribution.velocity import Interner
from attribution.shingles import shingles
from attribution.spans import SpanIndex, allowed_mask_from
from attribution.text import sequence_hash, token_hashes
from poa.settings import Settings
from processors.epochs import EpochBook
from processors.ledger import fee_credits
from processors.lineage import lineage_mass
from processors.messages import deadletter_message, flag_message, reward_message
from processors.order import Watermarks, order_key
from processors.spam import SpamGuard
from streams import topics
from streams.signing import KeyRegistry
from streams.events import (Contribution, EventError, Model, Usage, Validation,
                            canonical_json, decode_event, event_to_dict)

EPOCH0 = datetime(1970, 1, 1, tzinfo=timezone.utc)
DEFAULT_STAKE = 1_000_000
SPAM_PRIOR = 0.05  # P(good) given to duplicates, spam and farm members in the validator model
MAX_DEADLETTER_PAYLOAD = 1 << 20


@dataclass
class Result:
    rows: dict[str, list[dict]] = field(default_factory=dict)
    messages: list[tuple[str, str, bytes]] = field(default_factory=list)  # (topic, key, value)

    def add(self, table: str, row: dict) -> None:
        self.rows.setdefault(table, []).append(row)

    def extend(self, other: "Result") -> None:
        for t, rs in other.rows.items():
            self.rows.setdefault(t, []).extend(rs)
        self.messages.extend(other.messages)


@dataclass
class ContributionState:
    idx: int
    contribution_id: str
    contributor: str
    datanet: str
    kind: str
    ts: datetime
    status: str
    duplicate_of: str
    content_hash: str
    tokens: int
    license: str
    stake: int
    qualities: list[float] = field(default_factory=list)
    voters: dict[str, tuple[str, int]] = field(default_factory=dict)  # validator -> (verdict, stake)


@dataclass
class Stats:
    processed: int = 0
    redelivered: int = 0
    deadlettered: int = 0
    duplicates: int = 0
    spam: int = 0
    waiting: int = 0
    late: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    fees_micro: int = 0
    credits_micro: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, role)


class Core:
    """Stateful processing core. State lives in memory and is rebuilt from the event log."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.seq = 0
        self.restored_seq = 0  # seq of the last event rebuilt from the store's log
        self.last_ts = EPOCH0
        self.seen: set[str] = set()
        self.contribs: dict[str, ContributionState] = {}
        self.by_idx: list[ContributionState] = []
        self.by_hash: dict[str, str] = {}
        self.by_datanet: dict[str, list[int]] = {}
        self.models: dict[str, Model] = {}
        self.validators = Interner()
        self.ds = OnlineDawidSkene()
        self.guard = SpamGuard()
        self.validator_flagged: set[tuple[str, str]] = set()
        self.waiting: dict[str, list[tuple[str, object]]] = {}
        self.index = SpanIndex(settings.span_min_tokens)
        self.neardup = NearDupIndex(settings.minhash_num_perm, settings.neardup_threshold,
                                    seed=settings.minhash_seed)
        self.stats = Stats()
        self.buffer: list[tuple[tuple, str, object]] = []  # heap of (order key, topic, event)
        self.buffered: dict[str, tuple[str, object]] = {}
        self._inbox_new: list[str] = []
        self.released_key: tuple | None = None
        self.max_seen_ts: datetime | None = None
        self.marks = Watermarks()
        self.keys = KeyRegistry.from_file(settings.keys_file)
        self.book = EpochBook(settings.epoch_s, settings.emission_per_epoch_micro,
                              settings.emission_decay_bps, settings.emission_contributors_bps)

    # ------------------------------------------------------------------ entry
    def process(self, topic: str, raw: bytes, partition: int = 0, caught_up: bool = False) -> Result:
        """Take one raw message from ``topic``: dead-letter it, or buffer it for release.

        Valid events are processed by :meth:`release` in event-time order
        (:func:`processors.order.order_key`); ``partition`` and ``caught_up`` (this was
        the partition's last available message) feed :attr:`marks`, the watermarks.
        """
        res = Result()
        ts = None
        try:
            ev = decode_event(raw)
            ts = ev.ts
            if topics.TOPIC_OF_TYPE[ev.type] != topic and topic in topics.INPUT_TOPICS:
                raise EventError(f"event type {ev.type!r} does not belong on topic {topic}; "
                                 f"produce it to {topics.TOPIC_OF_TYPE[ev.type]}", ev.event_id)
        except EventError as err:
            key = "invalid:" + hashlib.blake2b(topic.encode() + b"\0" + raw, digest_size=12).hexdigest()
            if key in self.seen:
                self.stats.redelivered += 1
                return res
            self._log(res, key, "invalid", topic, self.last_ts, raw, "invalid")
            self._deadletter(res, err.event_id or key, topic, err.reason, raw)
            return res
        finally:
            self.marks.observe((topic, partition), ts, caught_up)
        if ev.event_id in self.seen:
            self.stats.redelivered += 1
            return res
        self._buffer(topic, ev)
        self._inbox_new.append(ev.event_id)
        return res

    def internal_error(self, topic: str, raw: bytes, exc: Exception) -> Result:
        """Dead-letter a message whose processing raised (a bug), keeping its payload."""
        res = Result()
        key = "error:" + hashlib.blake2b(topic.encode() + b"\0" + raw, digest_size=12).hexdigest()
        if key not in self.seen:
            self._log(res, key, "invalid", topic, self.last_ts, raw, "error")
            self._deadletter(res, key, topic, f"internal error: {type(exc).__name__}: {exc}", raw)
        return res

    def _buffer(self, topic: str, ev) -> None:
        self.seen.add(ev.event_id)
        key = order_key(ev)
        if self.released_key is not None and key < self.released_key:
            self.stats.late += 1
        heapq.heappush(self.buffer, (key, topic, ev))
        self.buffered[ev.event_id] = (topic, ev)
        if self.max_seen_ts is None or ev.ts > self.max_seen_ts:
            self.max_seen_ts = ev.ts

    def release(self, watermark: datetime | None) -> Result:
        """Process buffered events with event time before ``watermark`` (None: all), in order."""
        res = Result()
        while self.buffer and (watermark is None or self.buffer[0][0][0] < watermark):
            key, topic, ev = heapq.heappop(self.buffer)
            del self.buffered[ev.event_id]
            self.released_key = key if self.released_key is None else max(key, self.released_key)
            self._accept(res, topic, ev)
        return res

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
        self.last_ts = max(self.last_ts, ev.ts)
        missing = self._missing(ev)
        self._log(res, ev.event_id, ev.type, topic, ev.ts, encode(ev), "waiting" if missing else "ok")
        emissions, closed = self.book.advance(ev.ts, self.seq, self._validator_emission_weight)
        if closed:
            self._flag_validators(res, ev)
        self._book(res, emissions)
        for row in closed:
            res.add("epochs", row)
        if missing:
            self.waiting.setdefault(missing, []).append((topic, ev))
            self.stats.waiting += 1
            return
        self._apply(res, topic, ev)

    def replay_log(self, rows) -> int:
        """Rebuild state from ``events`` rows (seq, event_id, type, topic, ts, payload) in seq order."""
        n = 0
        for seq, event_id, etype, topic, ts, payload in rows:
            if etype == "invalid":
                self.seq = seq
                self.seen.add(event_id)
                self.stats.deadlettered += 1
                self.stats.processed += 1
            else:
                ev = decode_event(payload if isinstance(payload, bytes) else payload.encode())
                self.seen.add(ev.event_id)
                self.released_key = order_key(ev) if self.released_key is None else max(order_key(ev), self.released_key)
                self._accept(Result(), topic, ev)
                if self.seq != seq:
                    raise RuntimeError(f"event log diverged at seq {seq} ({event_id}): "
                                       f"replay produced seq {self.seq}")
            n += 1
        return n

    def load_inbox(self, rows) -> int:
        """Buffer again the stored, not yet processed events: (event_id, topic, payload)."""
        n = 0
        for event_id, topic, payload in rows:
            if event_id not in self.seen:
                self._buffer(topic, decode_event(payload.encode() if isinstance(payload, str) else payload))
                n += 1
        return n

    # ------------------------------------------------------------------ helpers
    def _log(self, res: Result, key: str, etype: str, topic: str, ts: datetime,
             payload: bytes, status: str) -> None:
        self.seq += 1
        self.seen.add(key)
        self.stats.processed += 1
        self.stats.by_type[etype] = self.stats.by_type.get(etype, 0) + 1
        res.add("events", {"seq": self.seq, "event_id": key, "type": etype, "topic": topic,
                           "ts": ts, "status": status,
                           "payload": payload.decode("utf-8", "backslashreplace")})

    def _deadletter(self, res: Result, event_id: str, topic: str, reason: str, raw: bytes) -> None:
        self.stats.deadlettered += 1
        body = raw[:MAX_DEADLETTER_PAYLOAD].decode("utf-8", "backslashreplace")
        if len(raw) > MAX_DEADLETTER_PAYLOAD:
            body += f"... [truncated: {len(raw)} bytes in all]"
        row = {"event_id": event_id, "topic": topic, "reason": reason, "payload": body,
               "ts": self.last_ts, "seq": self.seq}
        res.add("deadletter", row)
        res.messages.append(deadletter_message(row))

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
        for topic, ev in self.waiting.pop(key, []):
            self.stats.waiting -= 1
            missing = self._missing(ev)
            if missing:
                self.waiting.setdefault(missing, []).append((topic, ev))
                self.stats.waiting += 1
            else:
                self._apply(res, topic, ev)

    def _validator_emission_weight(self, validator: str) -> float:
        return self.ds.fee_weight(self.validators.get(validator))

    def _acting_account(self, ev) -> str:
        if isinstance(ev, Contribution):
            return ev.contributor
        if isinstance(ev, Validation):
            return ev.validator
        if isinstance(ev, Model):
            return ev.operator
        return self.models[ev.model_id].operator

    def _apply(self, res: Result, topic: str, ev) -> None:
        if self.s.require_signatures:
            reason = self.keys.check(ev, self._acting_account(ev))
            if reason:
                self._deadletter(res, ev.event_id, topic, reason, encode(ev))
                return
        if isinstance(ev, Contribution):
            self._contribution(res, ev)
        elif isinstance(ev, Validation):
            self._validation(res, ev)
        elif isinstance(ev, Model):
            self._model(res, ev)
        else:
            self._usage(res, ev)

    # ------------------------------------------------------------------ contributions
    def _contribution_row(self, c: ContributionState, event_id: str) -> dict:
        q = float(np.mean(c.qualities)) if c.qualities else None
        return {"contribution_id": c.contribution_id, "contributor": c.contributor,
                "datanet": c.datanet, "kind": c.kind, "ts": c.ts, "status": c.status,
                "duplicate_of": c.duplicate_of, "quality": q, "content_hash": c.content_hash,
                "tokens": c.tokens, "license": c.license, "stake": c.stake,
                "version": self.seq, "event_id": event_id, "seq": self.seq}

    def _flag(self, res: Result, c: ContributionState, reason: str, score: float,
              detail: str, ts: datetime, event_id: str) -> None:
        row = {"contribution_id": c.contribution_id, "contributor": c.contributor,
               "reason": reason, "score": score, "detail": detail, "ts": ts,
               "event_id": event_id, "seq": self.seq}
        res.add("flags", row)
        res.messages.append(flag_message(row))

    def _contribution(self, res: Result, ev: Contribution) -> None:
        if ev.contribution_id in self.contribs:
            self._deadletter(res, ev.event_id, topics.CONTRIBUTIONS,
                             f"contribution_id {ev.contribution_id!r} is already registered "
                             "by an earlier event", encode(ev))
            return
        toks = token_hashes(ev.content)
        h = f"{int(sequence_hash(toks)):016x}"
        c = ContributionState(len(self.by_idx), ev.contribution_id, ev.contributor, ev.datanet,
                              ev.kind, ev.ts, "pending", "", h, int(toks.shape[0]),
                              ev.license or "", ev.stake or 0)
        self.contribs[c.contribution_id] = c
        self.by_idx.append(c)
        first, match = self.by_hash.get(h), -1
        if first is not None:  # exact duplicate: the family's earliest member
            f = self.contribs[first]
            c.status, c.duplicate_of = "duplicate", f.duplicate_of or f.contribution_id
            self.stats.duplicates += 1
            self._flag(res, c, "exact_duplicate", 1.0, f"same normalized content as {first}",
                       ev.ts, ev.event_id)
        else:
            self.by_hash[h] = c.contribution_id
            match, jaccard = self.neardup.check_and_add(c.idx, shingles(toks))
            if match >= 0:
                c.status = "duplicate"
                c.duplicate_of = self.by_idx[self.neardup.root_of(match)].contribution_id
                self.stats.duplicates += 1
                self._flag(res, c, "near_duplicate", jaccard,
                           f"estimated Jaccard {jaccard:.3f} with {self.by_idx[match].contribution_id}",
                           ev.ts, ev.event_id)
            else:
                self.index.add(c.idx, toks)
                self.by_datanet.setdefault(c.datanet, []).append(c.idx)
        self._spam_checks(res, c, ev, toks, first, match if first is None else -1)
        res.add("contributions", self._contribution_row(c, ev.event_id))
        self._release(res, "contribution:" + ev.contribution_id)

    def _spam_checks(self, res: Result, c: ContributionState, ev: Contribution, toks: np.ndarray,
                     exact_of: str | None, near_idx: int) -> None:
        """Quality, velocity and farm evidence (processors/spam.py); spam earns nothing."""
        ts_s = ev.ts.timestamp()
        verdict = self.guard.check(ev.contributor, ts_s, toks, ev.content)
        for reason, score, detail in verdict.flags:
            self._flag(res, c, reason, score, detail, ev.ts, ev.event_id)
        if verdict.spam and c.status != "duplicate":
            c.status = "spam"
        orig = self.contribs[exact_of].idx if exact_of is not None else near_idx
        if orig >= 0:
            o = self.by_idx[orig]
            members, detail = self.guard.duplicate(o.idx, o.contributor, o.ts.timestamp(),
                                                   c.idx, c.contributor, ts_s)
            for m in members:
                mc = self.by_idx[m]
                self._flag(res, mc, "sybil_farm", 1.0, detail, ev.ts, ev.event_id)
                if mc.status != "duplicate":
                    mc.status = "spam"
                self.ds.set_prior(m, SPAM_PRIOR)
                if m != c.idx:
                    res.add("contributions", self._contribution_row(mc, ev.event_id))
        if c.status in ("duplicate", "spam"):
            self.ds.set_prior(c.idx, SPAM_PRIOR)
            self.stats.spam += c.status == "spam"

    # ------------------------------------------------------------------ validations
    def _validation(self, res: Result, ev: Validation) -> None:
        c = self.contribs[ev.contribution_id]
        if ev.validator in c.voters:
            self._deadletter(res, ev.event_id, topics.VALIDATIONS,
                             f"validator {ev.validator!r} already voted on {ev.contribution_id!r}",
                             encode(ev))
            return
        stake = ev.stake if ev.stake is not None else DEFAULT_STAKE
        c.voters[ev.validator] = (ev.verdict, stake)
        if ev.quality is not None:
            c.qualities.append(ev.quality)
        vi = self.validators(ev.validator)
        self.ds.vote(vi, c.idx, ev.verdict == "accept", float(stake))
        self.book.add_validator_evidence(ev.validator, 1.0)
        res.add("validations", {"validator": ev.validator, "contribution_id": ev.contribution_id,
                                "verdict": ev.verdict, "quality": ev.quality, "stake": stake,
                                "ts": ev.ts, "event_id": ev.event_id, "seq": self.seq})
        if c.status not in ("duplicate", "spam"):
            c.status = self.ds.status(c.idx)
        res.add("contributions", self._contribution_row(c, ev.event_id))
        res.add("validator_scores", {"validator": ev.validator, "reliability": self.ds.reliability(vi),
                                     "votes": self.ds.votes(vi), "ts": ev.ts,
                                     "event_id": ev.event_id, "seq": self.seq})

    def _validator_weights(self, voters: list[tuple[str, int]]) -> list[float]:
        """Fee weight of accepting validators: informedness (0 at or below chance) x stake weight."""
        sw = self.ds.stake_weights([float(st) for _, st in voters])
        return [self.ds.fee_weight(self.validators.get(v)) * float(w) for (v, _), w in zip(voters, sw)]

    def _flag_validators(self, res: Result, ev) -> None:
        """At epoch close: validators whose accepts concentrate on spam, or who vote against
        the consensus, get a flag (contribution_id empty, contributor = the validator)."""
        mask = np.fromiter((c.status in ("spam", "duplicate") for c in self.by_idx), dtype=bool,
                           count=len(self.by_idx))
        for v, reason, score in self.ds.suspects(mask):
            name = self.validators.names[v]
            if (name, reason) in self.validator_flagged:
                continue
            self.validator_flagged.add((name, reason))
            row = {"contribution_id": "", "contributor": name, "reason": f"validator_{reason}",
                   "score": float(score), "detail": f"reliability {self.ds.reliability(v):.3f} after "
                   f"{self.ds.votes(v)} votes", "ts": ev.ts, "event_id": ev.event_id, "seq": self.seq}
            res.add("flags", row)
            res.messages.append(flag_message(row))

    # ------------------------------------------------------------------ models
    def _model(self, res: Result, ev: Model) -> None:
        if ev.model_id in self.models:
            self._deadletter(res, ev.event_id, topics.MODELS,
                             f"model_id {ev.model_id!r} is already registered", encode(ev))
            return
        self.models[ev.model_id] = ev
        res.add("models", {"model_id": ev.model_id, "operator": ev.operator, "method": ev.method,
                           "base_models": list(ev.base_models),
                           "datanets": [d.datanet for d in ev.datanets],
                           "datanet_weights": [d.weight for d in ev.datanets],
                           "inherit": ev.inherit if ev.inherit is not None else 0.0,
                           "ts": ev.ts, "event_id": ev.event_id, "seq": self.seq})
        self._release(res, "model:" + ev.model_id)

    def lineage(self, model_id: str) -> list[str]:
        """The model and its ancestors through base_models, breadth first, each once."""
        out, queue, seen = [], [model_id], {model_id}
        while queue:
            m = queue.pop(0)
            out.append(m)
            for b in self.models[m].base_models:
                if b not in seen:
                    seen.add(b)
                    queue.append(b)
        return out

    # ------------------------------------------------------------------ usage
    def _eligible(self, c: ContributionState) -> bool:
        return c.status not in ("duplicate", "rejected", "spam")

    def _eligible_in(self, datanets) -> list[int]:
        return [i for dn in datanets for i in self.by_datanet.get(dn, ())
                if self._eligible(self.by_idx[i])]

    def _attribute(self, ev: Usage, toks: np.ndarray) -> tuple[dict, dict, int]:
        """Weights per (contribution idx, via model) summing to 1 (or empty), the evidence
        label per via model, and the matched output tokens. See processors/lineage.py."""
        nodes = lineage_mass(self.models, ev.model_id, self.s.inherit_defaults)
        per_node = {m: self._eligible_in(d.datanet for d in self.models[m].datanets) for m, _, _ in nodes}
        all_ids = sorted({i for ids in per_node.values() for i in ids})
        if not all_ids:
            return {}, {}, 0
        docs, credit, matched = self.index.attribute(toks, allowed_mask_from(all_ids, len(self.by_idx)))
        span = dict(zip(docs.tolist(), credit.tolist()))
        weights: dict[tuple[int, str], float] = {}
        evidence: dict[str, str] = {}
        for m, mass, _ in nodes:
            ids = per_node[m]
            if not ids:
                continue
            hits = {i: span[i] for i in ids if i in span}
            if hits:
                total, evidence[m] = sum(hits.values()), "span"
                for i, w in hits.items():
                    weights[(i, m)] = weights.get((i, m), 0.0) + mass * w / total
            else:  # no evidence through this model: pro rata over its datanets (by datanet weight)
                evidence[m] = "pro_rata"
                dw = {d.datanet: d.weight for d in self.models[m].datanets}
                counts: dict[str, int] = {}
                for i in ids:
                    counts[self.by_idx[i].datanet] = counts.get(self.by_idx[i].datanet, 0) + 1
                norm = sum(dw[dn] for dn in counts)
                for i in ids:
                    dn = self.by_idx[i].datanet
                    weights[(i, m)] = weights.get((i, m), 0.0) + mass * dw[dn] / norm / counts[dn]
        total = sum(weights.values())
        weights = {k: w / total for k, w in weights.items()} if total > 0 else {}
        if ev.influence and weights:  # the operator's own attribution, over eligible contributions
            by_cid = {self.by_idx[i].contribution_id: i for i, _ in weights}
            infl = {by_cid[x.contribution_id]: x.score for x in ev.influence if x.contribution_id in by_cid}
            isum = sum(infl.values())
            if isum > 0:
                mix = self.s.influence_mix if any(e == "span" for e in evidence.values()) else 1.0
                doc_total: dict[int, float] = {}
                for (i, m), w in weights.items():
                    doc_total[i] = doc_total.get(i, 0.0) + w
                new = {k: (1 - mix) * w for k, w in weights.items()}
                for i, sc in infl.items():  # influence flows through the doc's via-models pro rata
                    vias = [(k, w) for k, w in weights.items() if k[0] == i]
                    for k, w in vias:
                        new[k] += mix * sc / isum * w / doc_total[i]
                weights = {k: w for k, w in new.items() if w > 0}
                evidence = {m: (e + "+influence" if mix < 1.0 else "influence") for m, e in evidence.items()}
        return weights, evidence, matched

    def _usage(self, res: Result, ev: Usage) -> None:
        model = self.models[ev.model_id]
        toks = token_hashes(ev.output)
        weights, evidence, matched = self._attribute(ev, toks)
        epoch = self.book.booking_epoch(ev.ts)
        contributors, cweights, per_doc = [], [], {}
        for (i, via), w in sorted(weights.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            c = self.by_idx[i]
            per_doc[i] = per_doc.get(i, 0.0) + w
            contributors.append(c.contributor)
            cweights.append(w)
            self.book.add_contributor_evidence(c.contributor, w)
            res.add("attributions", {"request_id": ev.request_id, "model_id": ev.model_id,
                                     "contribution_id": c.contribution_id,
                                     "contributor": c.contributor, "datanet": c.datanet,
                                     "via_model": via, "weight": w, "evidence": evidence[via],
                                     "ts": ev.ts, "event_id": ev.event_id, "seq": self.seq})
        validators, vweights = [], []
        for i, wi in sorted(per_doc.items()):
            acc = [(v, st) for v, (verdict, st) in sorted(self.by_idx[i].voters.items()) if verdict == "accept"]
            xs = self._validator_weights(acc)
            total = sum(xs)
            for (v, _), x in zip(acc, xs):
                if x > 0:
                    validators.append(v)
                    vweights.append(wi * x / total)
        credits = fee_credits(fee=ev.fee, shares_bps=self.s.shares_bps, operator=model.operator,
                              contributors=contributors, contributor_weights=cweights,
                              validators=validators, validator_weights=vweights,
                              treasury=self.s.treasury_account, ref_event_id=ev.event_id,
                              ts=ev.ts, epoch=epoch, seq=self.seq)
        labels = set(evidence.values())
        summary = ("none" if not weights else labels.pop() if len(labels) == 1 else "mixed")
        lineage = sum(w for (_, via), w in weights.items() if via != ev.model_id)
        res.add("usage", {"request_id": ev.request_id, "model_id": ev.model_id, "fee": ev.fee,
                          "output_tokens": int(toks.shape[0]), "matched_tokens": matched,
                          "evidence": summary, "contributions": len(per_doc),
                          "lineage_share": lineage, "ts": ev.ts,
                          "event_id": ev.event_id, "seq": self.seq})
        self.stats.fees_micro += ev.fee
        self._book(res, credits)

    def _book(self, res: Result, rows: list[dict]) -> None:
        """Ledger rows: to the table, the reward stream, the stats and the epoch's entries."""
        self.book.add_entries(rows)
        for row in rows:
            res.add("reward_ledger", row)
            key = (row["source"], row["role"])
            self.stats.credits_micro[key] = self.stats.credits_micro.get(key, 0) + row["amount"]
            res.messages.append(reward_message(row))


def encode(ev) -> bytes:
    return canonical_json(event_to_dict(ev))
