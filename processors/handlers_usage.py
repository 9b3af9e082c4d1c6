"""Model registration and usage attribution (spans, lineage, influence) with the fee split.

A mixin of :class:`processors.core.Core`. A usage is attributed only to eligible
contributions (not duplicate, rejected or spam) in the datanets of the model's lineage;
attribution mass flows up the lineage by ``inherit`` (processors/lineage.py); within a
model, span evidence (attribution/spans.py) decides, else the share goes to the pools of
its datanets by datanet weight (settled at epoch close, processors/pools.py); the
operator's ``influence`` scores are mixed in (``influence_mix`` when spans matched, fully
otherwise); at most ``attribution_top_k`` contributions keep evidence weight, the rest
is pooled. The fee is split exactly (processors/ledger.py). Rows per usage: at most K
contributions per lineage model plus one per (datanet, lineage model) pooled, and one
ledger entry per recipient: bounded by the event and the lineage, not the corpus.
"""
from __future__ import annotations

import numpy as np

from poa_stream.attribution.span_kernels import attribute_matches
from poa_stream.attribution.text import token_hashes
from poa_stream.processors.escrow import escrow_account
from poa_stream.processors.ledger import ESCROW_PREFIX, fee_credits
from poa_stream.processors.lineage import lineage_mass
from poa_stream.processors.pools import pool_account
from poa_stream.processors.state import Result, encode
from poa_stream.streams import topics
from poa_stream.streams.events import Model, Usage


def covered_tokens(m: int, s: np.ndarray, L: np.ndarray) -> int:
    """Output tokens (of ``m``) covered by at least one match (start ``s``, length ``L``)."""
    cov = np.zeros(m + 1, dtype=np.int64)
    np.add.at(cov, s, 1)
    np.add.at(cov, s + L, -1)
    return int((np.cumsum(cov[:m]) > 0).sum())


def top_spans(m: int, s: np.ndarray, L: np.ndarray, d: np.ndarray, n_docs: int,
              fraction: float, first_source: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The matches of the ``ceil(fraction * m)`` best distinct spans of an ``m``-token output.

    A span is an (output start, length) pair; the matches (s, L, d) with the same pair are
    its occurrences in contributions. Score: ``length * ln(1 + n_docs / occurrences)``
    (longer and rarer first, the per-token weight of attribution/spans.py); ties by start,
    then length. So the evidence a usage keeps is bounded by its output (OLMoTrace keeps
    the top 0.05 L spans), not by how many contributions repeat a common phrase.
    ``first_source``: a kept span credits only its earliest source, the contribution with
    the lowest index (the first upload processed): later copies of a text earn nothing
    through the spans they share with it, and the evidence of a usage is at most one
    contribution per kept span."""
    key = s * (m + 1) + L
    uniq, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    n_keep = max(1, int(np.ceil(fraction * m)))
    if uniq.shape[0] > n_keep:
        length = (uniq % (m + 1)).astype(np.float64)
        score = length * np.log1p(n_docs / cnt)
        best = np.lexsort((uniq, -score))[:n_keep]
        chosen = np.zeros(uniq.shape[0], dtype=np.bool_)
        chosen[best] = True
        sel = chosen[inv.ravel()]
        s, L, d, key = s[sel], L[sel], d[sel], key[sel]
    if first_source and s.shape[0]:
        order = np.lexsort((d, key))  # by span, then contribution index
        first = np.ones(order.shape[0], dtype=np.bool_)
        first[1:] = key[order][1:] != key[order][:-1]
        keep = order[first]
        s, L, d = s[keep], L[keep], d[keep]
    return s, L, d


class UsageHandlers:
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

    def _lineage(self, model_id: str) -> list[tuple[str, float, int]]:
        """processors/lineage.py's masses, cached per (model, policy): models never change
        (the schedule's policy objects live as long as the core, so their id is a key)."""
        P = self.P
        key = (model_id, id(P))
        nodes = self._lineage_cache.get(key)
        if nodes is None:
            nodes = self._lineage_cache[key] = lineage_mass(self.models, model_id, P.inherit_defaults)
        return nodes

    def _attribute(self, ev: Usage, toks: np.ndarray) -> tuple[dict, dict, dict, int]:
        """(evidence weights per (contribution idx, via model), pool weights per (datanet,
        via model), the evidence label per via model, matched output tokens); the weights
        sum to 1 together (or both are empty: no eligible contribution in the lineage).

        Work: the span query (bounded by the output and the policy's caps), then
        O(matches + lineage + influence entries); never a pass over the corpus. Evidence:
        the best ``span_top_fraction`` of the output's distinct spans (:func:`top_spans`),
        then at most ``attribution_top_k`` contributions: the strongest by span credit
        (longest and rarest spans, attribution/spans.py), then by total weight; ties by
        contribution index (the earlier upload). What a model has no evidence for, or what
        is cut, goes to its datanets' pools (processors/pools.py) by datanet weight."""
        P, corpus = self.P, self.corpus
        nodes = self._lineage(ev.model_id)
        node_dns: dict[str, list[tuple[str, float]]] = {}
        for m, _, _ in nodes:
            dns = [(d.datanet, d.weight) for d in self.models[m].datanets
                   if d.weight > 0 and corpus.has_eligible(d.datanet)]
            if dns:
                node_dns[m] = dns
        if not node_dns:
            return {}, {}, {}, 0
        codes = np.asarray(sorted({corpus.datanet_code[dn] for dns in node_dns.values() for dn, _ in dns}),
                           dtype=np.int32)
        s, L, d = self.index.find_spans(toks, corpus.mask(), P.span_max_occurrences, P.span_work_budget)
        matched = 0
        if s.shape[0]:
            keep = np.isin(corpus.datanet[d], codes)
            s, L, d = s[keep], L[keep], d[keep]
            matched = covered_tokens(toks.shape[0], s, L)
            s, L, d = top_spans(toks.shape[0], s, L, d, self.index.n_docs, P.span_top_fraction,
                                P.span_first_source)
        docs, credit, _ = attribute_matches(toks.shape[0], s, L, d, float(self.index.n_docs))
        k = P.attribution_top_k
        if docs.shape[0] > k:  # strongest first, the earlier upload on a tie
            top = np.lexsort((docs, -credit))[:k]
            docs, credit = docs[top], credit[top]
        span = dict(zip(docs.tolist(), credit.tolist()))
        weights: dict[tuple[int, str], float] = {}
        pools: dict[tuple[str, str], float] = {}
        evidence: dict[str, str] = {}
        for m, mass, _ in nodes:
            dns = node_dns.get(m)
            if not dns:
                continue
            mine = {corpus.datanet_code[dn] for dn, _ in dns}
            hits = {i: c for i, c in span.items() if int(corpus.datanet[i]) in mine}
            if hits:
                total, evidence[m] = sum(hits.values()), "span"
                for i, c in hits.items():
                    weights[(i, m)] = weights.get((i, m), 0.0) + mass * c / total
            else:  # no evidence through this model: its datanets' pools, by datanet weight
                evidence[m] = "pool"
                norm = sum(w for _, w in dns)
                for dn, w in dns:
                    pools[(dn, m)] = pools.get((dn, m), 0.0) + mass * w / norm
        total = sum(weights.values()) + sum(pools.values())
        weights = {key: w / total for key, w in weights.items()}
        pools = {key: w / total for key, w in pools.items()}
        if ev.influence:
            self._mix_influence(ev, nodes, node_dns, weights, pools, evidence)
        return weights, self._cut_to_top_k(weights, pools, k), evidence, int(matched)

    def _mix_influence(self, ev: Usage, nodes, node_dns, weights: dict, pools: dict,
                       evidence: dict) -> None:
        """Mix the operator's influence scores in (``influence_mix`` when spans matched, fully
        otherwise), over eligible contributions of the lineage; each through the lineage
        models whose datanets hold it, by their mass. In place; O(influence entries)."""
        corpus, infl = self.corpus, {}
        mass_of = {m: mass for m, mass, _ in nodes if m in node_dns}
        dns_of = {m: {dn for dn, _ in dns} for m, dns in node_dns.items()}
        for x in ev.influence:
            c = self.contribs.get(x.contribution_id)
            if c is None or x.score <= 0 or not corpus.eligible[c.idx]:
                continue
            vias = [(m, mass) for m, mass in mass_of.items() if c.datanet in dns_of[m]]
            if vias:
                prev = infl.get(c.idx, (0.0, vias))
                infl[c.idx] = (prev[0] + x.score, vias)
        isum = sum(sc for sc, _ in infl.values())
        if isum <= 0:
            return
        mix = self.P.influence_mix if any(e == "span" for e in evidence.values()) else 1.0
        for d in (weights, pools):
            for key in d:
                d[key] *= 1 - mix
        for i, (sc, vias) in infl.items():
            vm = sum(mass for _, mass in vias)
            for m, mass in vias:
                weights[(i, m)] = weights.get((i, m), 0.0) + mix * sc / isum * mass / vm
        for d in (weights, pools):
            for key in [key for key, w in d.items() if w <= 0]:
                del d[key]
        for m, e in list(evidence.items()):
            evidence[m] = e + "+influence" if mix < 1.0 else "influence"

    def _cut_to_top_k(self, weights: dict, pools: dict, k: int) -> dict:
        """Keep at most ``k`` contributions in ``weights`` (by total weight, then index);
        the weight of the others moves to the pool of their datanet. Returns ``pools``."""
        per_doc: dict[int, float] = {}
        for (i, _), w in weights.items():
            per_doc[i] = per_doc.get(i, 0.0) + w
        if len(per_doc) <= k:
            return pools
        keep = set(sorted(per_doc, key=lambda i: (-per_doc[i], i))[:k])
        for (i, m) in [key for key in weights if key[0] not in keep]:
            key = (self.by_idx[i].datanet, m)
            pools[key] = pools.get(key, 0.0) + weights.pop((i, m))
        return pools

    def _usage(self, res: Result, ev: Usage) -> None:
        model = self.models[ev.model_id]
        toks = token_hashes(ev.output)
        weights, pools, evidence, matched = self._attribute(ev, toks)
        epoch = self.book.booking_epoch(ev.ts)
        contributors, payees, cweights, cdatanets, per_doc = [], [], [], [], {}
        accepted = self.corpus.accepted
        for (i, via), w in sorted(weights.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            c = self.by_idx[i]
            per_doc[i] = per_doc.get(i, 0.0) + w
            contributors.append(c.contributor)
            # not accepted yet: held in escrow until validators decide (processors/escrow.py)
            payees.append(c.contributor if accepted[i] else escrow_account(c.contribution_id))
            cdatanets.append(c.datanet)
            cweights.append(w)
            self.book.add_contributor_evidence(c.contributor, w)
            res.add("attributions", {"request_id": ev.request_id, "model_id": ev.model_id,
                                     "contribution_id": c.contribution_id,
                                     "contributor": c.contributor, "datanet": c.datanet,
                                     "via_model": via, "weight": w, "evidence": evidence[via],
                                     "ts": ev.ts, "event_id": ev.event_id, "seq": self.seq})
        pooled: dict[str, float] = {}
        for (dn, via), w in sorted(pools.items()):
            pooled[dn] = pooled.get(dn, 0.0) + w
            res.add("attributions", {"request_id": ev.request_id, "model_id": ev.model_id,
                                     "contribution_id": pool_account(dn), "contributor": pool_account(dn),
                                     "datanet": dn, "via_model": via, "weight": w,
                                     "evidence": "pool", "ts": ev.ts, "event_id": ev.event_id,
                                     "seq": self.seq})
        validators, vweights, fee_w = [], [], self._fee_weight
        for i, wi in sorted(per_doc.items()):
            acc = self._accepting(self.by_idx[i])
            xs = [fee_w(v) * sw for v, sw in acc]
            total = sum(xs)
            for (v, _), x in zip(acc, xs):
                if x > 0:
                    validators.append(v)
                    vweights.append(wi * x / total)
        credits = fee_credits(fee=ev.fee, shares_bps=self.P.shares_bps, operator=model.operator,
                              contributors=payees, contributor_weights=cweights,
                              validators=validators, validator_weights=vweights,
                              treasury=self.P.treasury_account, ref_event_id=ev.event_id,
                              ts=ev.ts, epoch=epoch, seq=self.seq,
                              pools=[pool_account(dn) for dn in pooled],
                              pool_weights=list(pooled.values()))
        paid = {r["account"]: r["amount"] for r in credits if r["role"] == "pool"}
        for r in credits:
            if r["role"] == "escrow":
                self.escrow.hold(self.contribs[r["account"][len(ESCROW_PREFIX):]].idx, r["amount"])
        for dn, mass in pooled.items():  # the mass counts as evidence even without a fee
            self.pools.add(dn, paid.get(pool_account(dn), 0), mass)
        labels = set(evidence.values())
        summary = ("none" if not (weights or pools) else labels.pop() if len(labels) == 1 else "mixed")
        lineage = (sum(w for (_, via), w in weights.items() if via != ev.model_id)
                   + sum(w for (_, via), w in pools.items() if via != ev.model_id))
        res.add("usage", {"request_id": ev.request_id, "model_id": ev.model_id, "fee": ev.fee,
                          "output_tokens": int(toks.shape[0]), "matched_tokens": matched,
                          "evidence": summary, "contributions": len(per_doc),
                          "lineage_share": lineage, "ts": ev.ts,
                          "event_id": ev.event_id, "seq": self.seq})
        P, start = self.P, self.book.epoch_s * epoch
        self.wash.observe(epoch, model.operator, ev.fee, ev.ts.timestamp(), start, contributors,
                          cweights, cdatanets, P.wash_low_fee_micro, P.wash_burst_window_s)
        self.stats.fees_micro += ev.fee
        self._book(res, credits)
