"""Validation handling: online Dawid-Skene statuses, validator scores and flags.

A mixin of :class:`processors.core.Core`. Each vote updates the online Dawid-Skene
model (attribution/reliability.py); a contribution's status follows its posterior
(``accepted`` >= ``status_accept_at``, ``rejected`` <= ``status_reject_at``, else
``pending``; numbers from the policy in force, streams/policy.py) unless it is a duplicate
or spam, at each vote on it and again at every epoch close (after a full EM sweep).
Validators share fees by informedness ``max(0, 2 * reliability - 1)`` times a stake weight
that never exceeds one vote; the informedness paid by is the snapshot published at the last
epoch close (:meth:`ValidationHandlers._publish_fee_weights`, table ``validator_weights``).
At each epoch close, validators whose accepts concentrate on spam or who vote against the
consensus are flagged.
"""
from __future__ import annotations

import numpy as np

from poa_stream.processors.messages import flag_message
from poa_stream.processors.state import Result, encode
from poa_stream.streams import topics
from poa_stream.streams.events import Validation

class ValidationHandlers:
    def _validation(self, res: Result, ev: Validation) -> None:
        c = self.contribs[ev.contribution_id]
        if ev.validator in c.voters:
            self._deadletter(res, ev.event_id, topics.VALIDATIONS,
                             f"validator {ev.validator!r} already voted on {ev.contribution_id!r}",
                             encode(ev))
            return
        stake = ev.stake if ev.stake is not None else self.P.default_stake
        c.voters[ev.validator] = (ev.verdict, stake)
        self.corpus.voted[c.idx] = True
        if ev.quality is not None:
            c.qualities.append(ev.quality)
        vi = self.validators(ev.validator)
        self.ds.vote(vi, c.idx, ev.verdict == "accept", float(stake))
        self.book.add_validator_evidence(ev.validator, 1.0)
        res.add("validations", {"validator": ev.validator, "contribution_id": ev.contribution_id,
                                "verdict": ev.verdict, "quality": ev.quality, "stake": stake,
                                "ts": ev.ts, "event_id": ev.event_id, "seq": self.seq})
        if c.status != "duplicate":
            c.status = self._signal_status(c)
        res.add("contributions", self._contribution_row(c, ev.event_id))
        res.add("validator_scores", {"validator": ev.validator, "reliability": self.ds.reliability(vi),
                                     "votes": self.ds.votes(vi), "ts": ev.ts,
                                     "event_id": ev.event_id, "seq": self.seq})

    def _signal_status(self, c) -> str:
        """The status of a contribution that is not a duplicate: the validator model's, whose
        prior carries the spam signals (``spam_prior``). A contribution the signals marked
        ``spam`` stays ``spam`` until validators accept it (posterior >= ``status_accept_at``):
        text statistics are evidence, reliable validators decide."""
        P = self.P
        new = self.ds.status(c.idx, P.status_accept_at, P.status_reject_at)
        if new != "accepted" and (c.idx in self.guard.signalled or c.idx in self.guard.farm_flagged):
            return "spam"
        return new

    def _fee_weight(self, validator: str) -> float:
        """The informedness a validator is paid by (usage fees, pool settlements, emissions).

        Policy ``validator_fee_weights = "epoch_snapshot"``: the weight of the snapshot the
        last epoch close published (:meth:`_publish_fee_weights`), 0 for a validator it does
        not hold (not judged by a close yet). ``"live"`` (v1): ``ds.fee_weight`` after the
        last vote, cached until the model's next update (``ds.version``)."""
        if self.P.validator_fee_weights == "epoch_snapshot":
            return self.fee_weights.get(validator, 0.0)
        if self._fee_w_version != self.ds.version:
            self._fee_w.clear()
            self._fee_w_version = self.ds.version
        w = self._fee_w.get(validator)
        if w is None:
            w = self._fee_w[validator] = self.ds.fee_weight(self.validators.get(validator))
        return w

    def _publish_fee_weights(self, res: Result, ev) -> None:
        """At epoch close, before its settlements and emissions (policy ``validator_fee_weights
        = "epoch_snapshot"``): ``epoch_sweep_passes`` EM passes over all votes, then every
        validator's fee weight ``max(0, 2 * reliability - 1)`` becomes the snapshot payments
        use until the next close: one ``validator_weights`` row per validator, ``epoch`` = the
        last epoch closing (the snapshot's version). The weights move only here, after the
        sweep over all votes so far, so no payment within an epoch depends on which of its
        votes came first.
        """
        P, ds = self.P, self.ds
        if P.epoch_sweep_passes > 0:
            ds.sweep(P.epoch_sweep_passes)
        version = self.book.epoch_of(ev.ts) - 1
        weights = {}
        for vi, name in enumerate(self.validators.names):
            w = weights[name] = ds.fee_weight(vi)
            res.add("validator_weights", {"epoch": version, "validator": name, "fee_weight": w,
                                          "reliability": ds.reliability(vi), "votes": ds.votes(vi),
                                          "ts": ev.ts, "event_id": ev.event_id, "seq": self.seq})
        self.fee_weights, self.fee_weights_epoch = weights, version

    def _accepting(self, c) -> list[tuple[str, float]]:
        """(validator, stake weight) of ``c``'s accepting voters, sorted by validator; cached
        on ``c`` until it gets another vote (``voters`` only grows)."""
        cached = c.accepting
        if cached is None or cached[0] != len(c.voters):
            acc = [(v, self.ds.stake_weight(st)) for v, (verdict, st) in sorted(c.voters.items())
                   if verdict == "accept"]
            cached = c.accepting = (len(c.voters), acc)
        return cached[1]

    def _validator_weights(self, voters: list[tuple[str, int]]) -> list[float]:
        """Fee weight of accepting validators ``[(validator, stake)]``: informedness (0 at or
        below chance) x stake weight (log2 of stake over ``stake_ref``, clipped)."""
        return [self._fee_weight(v) * self.ds.stake_weight(st) for v, st in voters]

    def _refresh_statuses(self, res: Result, ev, sweep: bool = True) -> int:
        """At epoch close: ``epoch_sweep_passes`` full EM passes over all votes (``sweep``;
        :meth:`_publish_fee_weights` ran them before the close already), then every
        voted contribution (not duplicate or spam) takes the status its posterior now gives,
        so a status does not freeze at its last vote while the validators' confusions move
        (an early accept by colluders is undone once they are found out). Changed statuses
        are written as new ``contributions`` rows (version = this seq; a row this event
        already wrote for the same contribution is replaced). Returns how many changed."""
        P = self.P
        if P.epoch_sweep_passes <= 0:
            return 0
        if sweep:
            self.ds.sweep(P.epoch_sweep_passes)
        changed = []
        for c in self.by_idx:
            if c.voters and c.status != "duplicate":
                new = self._signal_status(c)
                if new != c.status:
                    c.status = new
                    changed.append(c)
        if changed:
            ids = {c.contribution_id for c in changed}
            rows = res.rows.setdefault("contributions", [])
            rows[:] = [r for r in rows if not (r["seq"] == self.seq and r["contribution_id"] in ids)]
            rows.extend(self._contribution_row(c, ev.event_id) for c in changed)
        return len(changed)

    def _flag_validators(self, res: Result, ev) -> None:
        """At epoch close: validators whose accepts concentrate on spam, or who vote against
        the consensus, get a flag (contribution_id empty, contributor = the validator)."""
        mask = np.fromiter((c.status in ("spam", "duplicate") for c in self.by_idx), dtype=bool,
                           count=len(self.by_idx))
        P = self.P
        for v, reason, score in self.ds.suspects(mask, P.suspect_min_accepts, P.suspect_min_share,
                                                 P.suspect_min_lift, P.suspect_min_votes,
                                                 P.suspect_max_reliability):
            name = self.validators.names[v]
            if (name, reason) in self.validator_flagged:
                continue
            self.validator_flagged.add((name, reason))
            row = {"contribution_id": "", "contributor": name, "reason": f"validator_{reason}",
                   "score": float(score), "detail": f"reliability {self.ds.reliability(v):.3f} after "
                   f"{self.ds.votes(v)} votes", "ts": ev.ts, "event_id": ev.event_id, "seq": self.seq}
            res.add("flags", row)
            res.messages.append(flag_message(row))
