"""Model registration and usage attribution (spans, lineage, influence) with the fee split.

A mixin of :class:`processors.core.Core`. A usage is attributed only to eligible
contributions (not duplicate, rejected or spam) in the datanets of the model's lineage;
attribution mass flows up the lineage by ``inherit`` (processors/lineage.py); within a
model, span evidence (attribution/spans.py) decides, else the share goes pro rata over
its datanets by datanet weight; the operator's ``influence`` scores are mixed in
(``influence_mix`` when spans matched, fully otherwise). The fee is split exactly
(processors/ledger.py).
"""
from __future__ import annotations

import numpy as np

from attribution.spans import allowed_mask_from
from attribution.text import token_hashes
from processors.ledger import fee_credits
from processors.lineage import lineage_mass
from processors.state import Result, eligibility_version, encode
from streams import topics
from streams.events import Model, Usage


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

    @staticmethod
    def _eligible(c) -> bool:
        return c.status not in ("duplicate", "rejected", "spam")

    def _eligible_in(self, datanets) -> list[int]:
        """Eligible contribution indices of ``datanets``, in order; per datanet cached until a
        status changes (``eligibility_version``) or the datanet gets a contribution."""
        out, version = [], eligibility_version()
        for dn in datanets:
            ids = self.by_datanet.get(dn, ())
            hit = self._eligible_cache.get(dn)
            if hit is None or hit[0] != version or hit[1] != len(ids):
                hit = self._eligible_cache[dn] = (version, len(ids),
                                                  [i for i in ids if self._eligible(self.by_idx[i])])
            out.extend(hit[2])
        return out

    def _attribute(self, ev: Usage, toks: np.ndarray) -> tuple[dict, dict, int]:
        """Weights per (contribution idx, via model) summing to 1 (or empty), the evidence
        label per via model, and the matched output tokens. See processors/lineage.py."""
        nodes = lineage_mass(self.models, ev.model_id, self.P.inherit_defaults)
        per_node = {m: self._eligible_in(d.datanet for d in self.models[m].datanets) for m, _, _ in nodes}
        all_ids = sorted({i for ids in per_node.values() for i in ids})
        if not all_ids:
            return {}, {}, 0
        P = self.P
        docs, credit, matched = self.index.attribute(toks, allowed_mask_from(all_ids, len(self.by_idx)),
                                                     P.span_max_occurrences, P.span_work_budget)
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
                mix = self.P.influence_mix if any(e == "span" for e in evidence.values()) else 1.0
                doc_total: dict[int, float] = {}
                vias_of: dict[int, list] = {}  # one pass: linear in weights + influence entries
                for (i, m), w in weights.items():
                    doc_total[i] = doc_total.get(i, 0.0) + w
                    vias_of.setdefault(i, []).append(((i, m), w))
                new = {k: (1 - mix) * w for k, w in weights.items()}
                for i, sc in infl.items():  # influence flows through the doc's via-models pro rata
                    for k, w in vias_of[i]:
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
                              contributors=contributors, contributor_weights=cweights,
                              validators=validators, validator_weights=vweights,
                              treasury=self.P.treasury_account, ref_event_id=ev.event_id,
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
