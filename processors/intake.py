"""Admission rules: every check that can dead-letter an event, run before any state changes.

A mixin of :class:`processors.core.Core`. Two stages, both before the event changes state:

- at intake (:meth:`IntakeChecks._intake_reason`, from ``Core.process``, before the event
  id is marked seen): time bounds (not before the policy's genesis; not more than
  ``max_future_skew_s`` after the Kafka record's timestamp, and, if set, not more than
  ``max_past_skew_s`` before it; in a replay, not more than ``max_stream_jump_s`` after the
  latest event time of the stream) and, under signature enforcement, the signature of the
  acting account when it is known without state (contributor, validator, model operator, the
  operator of an already registered model) and the ownership of scoped ids. A forgery is
  therefore dead-lettered without burning the id it copied: the genuine event is accepted
  when it comes.
- at release (:meth:`IntakeChecks._admit_reason`, from ``Core._accept``, in processing
  order): ids registered twice, a usage reporting a ``request_id`` already reported (the
  idempotency key of an inference), a model that is its own base or closes a lineage cycle,
  a second vote of a validator, and the signature again under the policy of the booking epoch.
  A rejected event is logged as ``invalid`` (status ``rejected``): it advances no epoch, and a
  replay of the log skips it.

Scoped ids: under signature enforcement an account with a registered key names what it owns
``<account>:<local id>`` (``contribution_id`` of its contributions, ``model_id`` of its
models), and an id whose prefix is another keyed account is refused: a front-runner who
copies alice's id (even with an earlier timestamp, which would win in event-time order) is
dead-lettered instead of taking her object and the votes for it.

Waiting: an event that references what has not arrived (a model, a base model, a
contribution) waits at most ``wait_expiry`` seconds of event time (default one epoch), then
is dead-lettered (:meth:`IntakeChecks._expire_waiting`), deterministically, since event
time only moves with the log.
"""
from __future__ import annotations

import hashlib
import heapq
from datetime import datetime, timedelta

from poa_stream.processors.state import encode
from poa_stream.streams.events import Contribution, EventError, Model, Usage, Validation


def digest(payload: bytes) -> int:
    """64-bit digest of an event's canonical encoding (same event id, same event?)."""
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little")


class IntakeChecks:
    # ------------------------------------------------------------------ intake
    def _check_time(self, ev, record_ts: datetime | None) -> None:
        P = self.P
        if ev.ts < P.genesis_ts:
            raise EventError(f"ts {_iso(ev.ts)} is before the genesis of the emission schedule "
                             f"({_iso(P.genesis_ts)})", ev.event_id)
        if record_ts is not None:
            if ev.ts > record_ts + timedelta(seconds=P.max_future_skew_s):
                raise EventError(f"ts {_iso(ev.ts)} is more than {P.max_future_skew_s:.0f} s after its "
                                 f"Kafka record's timestamp {_iso(record_ts)}", ev.event_id)
            if P.max_past_skew_s is not None and ev.ts < record_ts - timedelta(seconds=P.max_past_skew_s):
                raise EventError(f"ts {_iso(ev.ts)} is more than {P.max_past_skew_s:.0f} s before its "
                                 f"Kafka record's timestamp {_iso(record_ts)}", ev.event_id)
        elif (not self.log_order and self.max_seen_ts is not None
              and ev.ts > self.max_seen_ts + timedelta(seconds=P.max_stream_jump_s)):
            raise EventError(f"ts {_iso(ev.ts)} is more than {P.max_stream_jump_s:.0f} s after the latest "
                             f"event time of the stream ({_iso(self.max_seen_ts)})", ev.event_id)

    def _static_actor(self, ev) -> str | None:
        """The acting account, when it is known without waiting for a reference."""
        if isinstance(ev, Contribution):
            return ev.contributor
        if isinstance(ev, Validation):
            return ev.validator
        if isinstance(ev, Model):
            return ev.operator
        model = self.models.get(ev.model_id)
        return model.operator if model is not None else None

    def _intake_reason(self, ev) -> str | None:
        """Why a decoded event is refused before it is buffered (None: take it)."""
        P = self.schedule.at(self.book.booking_epoch(ev.ts))
        if not P.require_signatures:
            return None
        keys = self.keys_for(P)
        actor = self._static_actor(ev)
        if actor is None:  # a usage of a model not registered yet: check what it claims
            return keys.check(ev, ev.signer) if ev.signer and ev.signature else None
        return keys.check(ev, actor) or self._owned_id_reason(ev, actor, keys)

    @staticmethod
    def _owned_id_reason(ev, actor: str, keys) -> str | None:
        if isinstance(ev, Contribution):
            field, oid = "contribution_id", ev.contribution_id
        elif isinstance(ev, Model):
            field, oid = "model_id", ev.model_id
        else:
            return None
        prefix = oid.split(":", 1)[0] if ":" in oid else None
        if actor in keys and prefix != actor:
            return (f"{field} {oid!r} must start with {actor + ':'!r}: ids of accounts with a "
                    "registered key are scoped to their owner")
        if prefix is not None and prefix != actor and prefix in keys:
            return f"{field} {oid!r} is scoped to account {prefix!r}, not to {actor!r}"
        return None

    # ------------------------------------------------------------------ release
    def _admit_reason(self, ev) -> str | None:
        """Why an event is refused when it is released (None: process it); no state changed yet."""
        if isinstance(ev, Contribution):
            if ev.contribution_id in self.contribs:
                return f"contribution_id {ev.contribution_id!r} is already registered by an earlier event"
        elif isinstance(ev, Model):
            if ev.model_id in self.models or ev.model_id in self._waiting_models:
                return f"model_id {ev.model_id!r} is already registered"
            if ev.model_id in ev.base_models:
                return f"model {ev.model_id!r} lists itself as a base model"
            if cycle := self._lineage_cycle(ev):
                return f"model {ev.model_id!r} closes a lineage cycle: {' -> '.join(cycle)}"
        elif isinstance(ev, Usage):
            if ev.request_id in self.requests:
                return (f"duplicate report: request_id {ev.request_id!r} was already reported by "
                        "an earlier event; an inference is billed once")
        elif isinstance(ev, Validation):
            c = self.contribs.get(ev.contribution_id)
            if c is not None and ev.validator in c.voters:
                return f"validator {ev.validator!r} already voted on {ev.contribution_id!r}"
        P = self.P
        actor = self._static_actor(ev)
        if P.require_signatures and actor is not None:
            keys = self.keys_for(P)
            return keys.check(ev, actor) or self._owned_id_reason(ev, actor, keys)
        return None

    def _lineage_cycle(self, ev: Model) -> list[str] | None:
        """The cycle ``ev`` would close among models waiting for their bases, if any."""
        for base in ev.base_models:
            path, cur = [ev.model_id, base], base
            while cur in self._waiting_models:
                cur = self._waiting_models[cur]
                path.append(cur)
                if cur == ev.model_id:
                    return path
                if len(path) > len(self._waiting_models) + 2:
                    break
        return None

    def _register_admitted(self, ev, missing: str | None) -> None:
        """State an admitted event claims at once (so later duplicates are refused)."""
        if isinstance(ev, Usage):
            self.requests.add(ev.request_id)
        if missing is not None:
            heapq.heappush(self._wait_heap, (ev.ts, ev.event_id))

    # ------------------------------------------------------------------ waiting
    def _expire_waiting(self, res, now: datetime) -> None:
        """Dead-letter the events that waited more than ``wait_expiry`` of event time."""
        limit = now - timedelta(seconds=self.P.wait_expiry)
        while self._wait_heap and self._wait_heap[0][0] < limit:
            ts, event_id = heapq.heappop(self._wait_heap)
            key = self._waiting_key.get(event_id)
            if key is None:  # released (or dropped) meanwhile
                continue
            topic, ev = self.waiting[key][event_id]
            self._drop_waiting(event_id)
            self.stats.expired += 1
            self._deadletter(res, event_id, topic,
                             f"expired: waited more than {self.P.wait_expiry:.0f} s of event time for "
                             f"{key.replace(':', ' ', 1)}, which never arrived", encode(ev))


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")
