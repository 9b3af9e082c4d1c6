"""Contribution handling: exact and near duplicates, spam evidence, sybil farms.

A mixin of :class:`processors.core.Core` (it uses the core's state). Exact duplicates
by normalized content hash first, then MinHash/LSH near duplicates (estimated Jaccard
of word 5-gram shingles >= ``neardup_threshold``); ``duplicate_of`` is the earliest
member of the family. Quality signals, velocity and farm clusters come from
processors/spam.py; duplicates and spam earn nothing (they are never eligible).
"""
from __future__ import annotations

from datetime import datetime

import numpy as np

from poa_stream.attribution.shingles import ngram_hashes, shingles, skip_bigrams
from poa_stream.attribution.text import sequence_hash, token_hashes
from poa_stream.attribution.quality import text_form
from poa_stream.processors.handlers_usage import covered_tokens
from poa_stream.processors.messages import flag_message
from poa_stream.processors.state import ContributionState, Result, encode
from poa_stream.streams import topics
from poa_stream.streams.events import Contribution

class ContributionHandlers:
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
        self.corpus.add(c.idx, c.datanet, c.contributor, toks, c.status)
        c.arrays = self.corpus  # eligibility follows every status change from here on
        form = self.P.form_of(c.datanet) or text_form(ev.content)
        found: list = []

        def spans():  # the span query against earlier eligible texts, at most once per upload
            if not found:
                P = self.P
                found.append(self.index.find_spans(toks, self.corpus.mask(), P.span_max_occurrences,
                                                   P.span_work_budget))
            return found[0]
        first, match, agrees = self.by_hash.get(h), -1, -1
        if first is not None and self._agreement(c, self.contribs[first]):
            agrees = self.contribs[first].idx  # the same label from another annotator
        elif first is not None:  # exact duplicate: the family's earliest member
            f = self.contribs[first]
            c.status, c.duplicate_of = "duplicate", f.duplicate_of or f.contribution_id
            self.stats.duplicates += 1
            self._flag(res, c, "exact_duplicate", 1.0, f"same normalized content as {first}",
                       ev.ts, ev.event_id)
        if c.status != "duplicate":
            if first is None:
                self.by_hash[h] = c.contribution_id
            match, jaccard = self.neardup.check_and_add(c.idx, shingles(toks, self.P.shingle_k))
            if match >= 0 and agrees < 0 and self._agreement(c, self.by_idx[match]):
                agrees, match = match, -1
            if match >= 0 and agrees < 0:
                c.status = "duplicate"
                c.duplicate_of = self.by_idx[self.neardup.root_of(match)].contribution_id
                self.stats.duplicates += 1
                self._flag(res, c, "near_duplicate", jaccard,
                           f"estimated Jaccard {jaccard:.3f} with {self.by_idx[match].contribution_id}",
                           ev.ts, ev.event_id)
            elif agrees < 0 and (copied := self._copied_from(toks, spans(), form)) is not None:
                match, share = copied  # a lightly edited copy: most of it is spans of one text
                o = self.by_idx[match]
                c.status, c.duplicate_of = "duplicate", o.duplicate_of or o.contribution_id
                self.stats.duplicates += 1
                self._flag(res, c, "copied_spans", share,
                           f"{share:.0%} of its words lie in spans of >= {self.P.span_min_tokens} words "
                           f"of {o.contribution_id}", ev.ts, ev.event_id)
            else:
                if c.kind != "annotation":  # agreeing annotators each did the work
                    self.corpus.weight[c.idx] = self._novel_windows(toks, int(self.corpus.weight[c.idx]), spans())
                self.index.add(c.idx, toks)
                self.by_datanet.setdefault(c.datanet, []).append(c.idx)
        orig = -1 if agrees >= 0 else self.contribs[first].idx if first is not None else match
        self._spam_checks(res, c, ev, toks, orig, agrees, form, spans)
        res.add("contributions", self._contribution_row(c, ev.event_id))
        self._release(res, "contribution:" + ev.contribution_id)

    def _copied_from(self, toks: np.ndarray, spans, form: str = "prose") -> tuple[int, float] | None:
        """(earlier contribution, share) when at least ``copy_containment`` of the new text's
        words lie in matched spans (>= ``span_min_tokens`` words) of ONE earlier eligible
        contribution: a copy with light edits, which MinHash (a Jaccard of whole shingle sets)
        misses once every 30th word is changed. Code and tables (``form``) need
        ``copy_containment_structured``: generated scripts and files cut in chunks repeat
        long runs across honest uploads. ``spans``: the span query's (starts, lengths, docs)."""
        P, m = self.P, int(toks.shape[0])
        if m < 2 * P.span_min_tokens:
            return None
        s, L, d = spans
        if not s.shape[0]:
            return None
        docs, inv = np.unique(d, return_inverse=True)
        mass = np.bincount(inv.ravel(), weights=L.astype(np.float64))
        best, best_share = -1, 0.0
        for j in np.lexsort((docs, -mass))[:3]:  # the three docs with the most matched words
            sel = d == docs[j]
            share = covered_tokens(m, s[sel], L[sel]) / m
            if share > best_share:
                best, best_share = int(docs[j]), share
        need = P.copy_containment if form == "prose" else P.copy_containment_structured
        return (best, best_share) if best_share >= need else None

    def _novel_windows(self, toks: np.ndarray, total: int, spans) -> int:
        """The contribution's supply weight: its distinct ``span_min_tokens``-word windows that
        no earlier eligible contribution holds (a window inside a matched span is not new).
        So a later upload earns pool settlements and emissions only for what it added, the
        first source keeps the rest. ``total``: all its distinct windows (the cap)."""
        w = self.P.span_min_tokens
        m = int(toks.shape[0])
        if m < w:
            return total
        s, L, _ = spans
        if not s.shape[0]:
            return total
        n_win = m - w + 1
        edge = np.zeros(n_win + 1, dtype=np.int64)
        np.add.at(edge, s, 1)
        np.add.at(edge, np.minimum(s + L - w + 1, n_win), -1)
        old = np.cumsum(edge[:n_win]) > 0
        grams = ngram_hashes(toks, w)
        novel = np.setdiff1d(grams[~old], grams[old])
        return min(total, int(novel.shape[0]))

    def _template_siblings(self, c: ContributionState, toks: np.ndarray, form: str,
                           agrees: int, spans) -> list[tuple[int, float]]:
        """Earlier prose of OTHER accounts whose ordered word pairs (at distance 1 to
        ``template_skip``: :func:`attribution.shingles.skip_bigrams`) have an estimated
        Jaccard >= ``template_jaccard`` with this one's while under a fifth of this text lies in spans
        (>= ``span_min_tokens`` words) of earlier texts: slot-filled copies of one template share their
        words in order but few runs of 5 (a quoted license shares long runs: a copy, judged by
        ``_copied_from``, not a template). ``[(idx, jaccard)]``, earliest first, at most 8.
        Prose of ``quality_min_tokens_stats`` words or more that is not a duplicate or an
        annotation is indexed. ``spans``: the upload's span query (called only on a match)."""
        if (form != "prose" or c.status == "duplicate" or c.kind == "annotation" or agrees >= 0
                or toks.shape[0] < self.P.quality_min_tokens_stats):
            return []
        docs, sims = self.templates.matches_and_add(c.idx, skip_bigrams(toks, self.P.template_skip))
        out = [(d, j) for d, j in zip(docs.tolist(), sims.tolist()) if self.by_idx[d].contributor != c.contributor]
        if out:
            s, L, _ = spans()
            if covered_tokens(int(toks.shape[0]), s, L) >= 0.2 * toks.shape[0]:
                return []  # mostly quoted runs of earlier texts: a copy question, not a template
        return out

    @staticmethod
    def _agreement(c: ContributionState, earlier: ContributionState) -> bool:
        """Annotations of different accounts with the same (or a near-identical) content are
        agreement on an item, not a duplicate: both stay for the validators to judge."""
        return c.kind == "annotation" and earlier.kind == "annotation" and earlier.contributor != c.contributor

    def _spam_checks(self, res: Result, c: ContributionState, ev: Contribution, toks: np.ndarray,
                     orig: int, agrees: int, form: str, spans) -> None:
        """Quality, velocity and farm evidence (processors/spam.py). Signals are evidence: a
        contribution they mark ``spam`` gets a low prior in the validator model, and
        validators who accept it (posterior >= ``status_accept_at``) overrule them
        (handlers_validations.py)."""
        ts_s = ev.ts.timestamp()
        siblings = self._template_siblings(c, toks, form, agrees, spans)
        extra = [("templated", float(siblings[0][1]),
                  f"estimated Jaccard {siblings[0][1]:.3f} of ordered word pairs with "
                  f"{self.by_idx[siblings[0][0]].contribution_id} (another account)")] if siblings else []
        verdict = self.guard.check(ev.contributor, ts_s, toks, ev.content, self.P,
                                   self.corpus.datanet_code[c.datanet], form, c.idx, extra)
        for reason, score, detail in verdict.flags:
            self._flag(res, c, reason, score, detail, ev.ts, ev.event_id)
        if verdict.spam:
            self.guard.signalled.add(c.idx)
            if c.status != "duplicate":
                c.status = "spam"
        if siblings:
            self.guard.templated.add(c.idx)
        farm, farm_detail = [], ""
        for m, jac in siblings:  # the family's earlier members get the reason too
            new, why = self.guard.template(m, self.by_idx[m].contributor, c.idx, c.contributor)
            if new:
                farm, farm_detail = farm + new, why
            if m in self.guard.templated:
                continue
            self.guard.templated.add(m)
            if self.guard.add_reason(m, self.P):
                mc = self.by_idx[m]
                self._flag(res, mc, "templated", float(jac),
                           f"estimated Jaccard {jac:.3f} of ordered word pairs with {c.contribution_id} "
                           "(another account); its own quality reason makes two", ev.ts, ev.event_id)
                self.ds.set_prior(m, self.P.spam_prior)
                if mc.status != "duplicate":
                    mc.status = self._signal_status(mc)
                res.add("contributions", self._contribution_row(mc, ev.event_id))
        members, reason, detail = [], "sybil_farm", ""
        if farm:
            members, reason, detail = farm, "template_farm", farm_detail
        elif orig >= 0:
            o = self.by_idx[orig]
            members, detail = self.guard.duplicate(o.idx, o.contributor, o.ts.timestamp(),
                                                   c.idx, c.contributor, ts_s)
        elif agrees >= 0:
            o = self.by_idx[agrees]
            members, detail = self.guard.agreement(o.idx, o.contributor, o.ts.timestamp(), c.idx,
                                                   c.contributor, ts_s, self.P.annotation_farm_min_items)
            reason = "label_farm"
        if members:
            for m in members:
                mc = self.by_idx[m]
                self._flag(res, mc, reason, 1.0, detail, ev.ts, ev.event_id)
                self.ds.set_prior(m, self.P.spam_prior)
                if mc.status != "duplicate":  # validators who already accepted it still decide
                    mc.status = self._signal_status(mc)
                if m != c.idx:
                    res.add("contributions", self._contribution_row(mc, ev.event_id))
        if c.status in ("duplicate", "spam"):
            self.ds.set_prior(c.idx, self.P.spam_prior)
            self.stats.spam += c.status == "spam"
