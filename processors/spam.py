"""Spam evidence at contribution time: quality signals, velocity, sybil-farm clusters.

Pure glue over the kernels of attribution/quality.py, velocity.py and clusters.py.
:meth:`SpamGuard.check` returns the flags a new contribution raises and whether it is
spam (two or more low-quality reasons; one alone never is). :meth:`SpamGuard.duplicate`
records a duplicate edge between contributions of different accounts and returns the
contributions that this edge reveals as members of a sybil farm (at least
``farm_min_accounts`` accounts posting near-identical text within ``farm_burst_s``; each is
returned once). Every number comes from the ledger policy (streams/policy.py): the models'
shapes from the store's first policy, the thresholds from the policy in force. The
familiarity model learns only from texts that raised no reason, so spam never teaches
it its own template.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from poa_stream.attribution.clusters import FarmClusters
from poa_stream.attribution.quality import (Commonness, Familiarity, Reference, Thresholds, is_low_quality, OrderModel,
                                 low_quality_reasons, signals, text_form)
from poa_stream.attribution.velocity import Interner, VelocityTracker
from poa_stream.streams.policy import Policy


def thresholds(p: Policy) -> Thresholds:
    return Thresholds(min_tokens=p.quality_min_tokens, min_tokens_stats=p.quality_min_tokens_stats,
                      max_compression=p.quality_max_compression,
                      max_repetition=p.quality_max_repetition,
                      min_entropy_norm=p.quality_min_entropy_norm,
                      min_words_per_sentence=p.quality_min_words_per_sentence,
                      max_words_per_sentence=p.quality_max_words_per_sentence,
                      min_familiarity=p.quality_min_familiarity, min_reasons=p.quality_min_reasons,
                      min_common_share=p.quality_min_common_share, min_ordered=p.quality_min_ordered,
                      decisive=tuple(p.quality_decisive_reasons),
                      max_compression_structured=p.quality_max_compression_structured,
                      max_repetition_structured=p.quality_max_repetition_structured,
                      min_entropy_norm_structured=p.quality_min_entropy_norm_structured)


_REFERENCES: dict[str, Reference] = {}


def reference(name: str) -> Reference | None:
    """The word-order reference model a policy names (``builtin``: the shipped one)."""
    if name == "none":
        return None
    if name not in _REFERENCES:
        _REFERENCES[name] = Reference.load()
    return _REFERENCES[name]


@dataclass
class Verdict:
    flags: list[tuple[str, float, str]] = field(default_factory=list)  # (reason, score, detail)
    spam: bool = False


class SpamGuard:
    def __init__(self, base: Policy) -> None:
        self.accounts = Interner()
        self.familiarity = Familiarity(base.familiarity_bits, base.familiarity_warm_bigrams)
        self.common = Commonness(20, base.common_warm_tokens, base.common_word_frac)
        self.order = OrderModel(reference(base.quality_reference))
        self.velocity = VelocityTracker(base.velocity_window_s, base.velocity_alpha,
                                        base.velocity_prior_gap_s)
        self.farms = FarmClusters(base.farm_min_accounts, base.farm_burst_s)
        self.farm_flagged: set[int] = set()
        self.signalled: set[int] = set()  # contributions with two or more low-quality reasons
        # annotation agreement (the same label from other accounts) is not a duplicate; a
        # label farm is accounts in bursts of identical labels on several items
        self.label_farms = FarmClusters(base.farm_min_accounts, base.annotation_burst_s)
        self.label_items: dict[int, set[int]] = {}  # account code -> items (cluster roots) in bursts
        self.label_burst_members: dict[int, set[int]] = {}  # account code -> its burst contributions
        # template farms: prose texts of several accounts sharing one template's words
        self.template_farms = FarmClusters(base.template_farm_min_accounts, None)
        self.reason_count: dict[int, int] = {}  # contribution -> low-quality reasons raised (if any)
        self.templated: set[int] = set()  # contributions with a "templated" reason
        self._th: tuple[Policy, Thresholds] | None = None

    def check(self, account: str, ts_s: float, toks: np.ndarray, content: str, policy: Policy,
              domain: int = 0, form: str | None = None, idx: int = -1,
              extra: list[tuple[str, float, str]] = ()) -> Verdict:
        """``domain``: the datanet's code; familiarity is learned and judged per datanet.
        ``form``: :func:`text_form` of ``content`` when the caller has it already. ``extra``:
        reasons found by the caller (``templated``), counted with the text's own; ``idx``:
        the contribution, whose reason count is kept for reasons found later
        (:meth:`add_reason`)."""
        v = Verdict()
        if self._th is None or self._th[0] is not policy:
            self._th = (policy, thresholds(policy))
        th = self._th[1]
        form = form or text_form(content)
        prose = form == "prose"
        sig = signals(toks, content.encode("utf-8"), self.familiarity if prose else None, domain,
                      self.common if prose else None, self.order if prose else None)
        reasons = low_quality_reasons(sig, th, form)
        if not reasons and not extra and prose:
            self.familiarity.learn(toks, domain)
            self.common.learn(toks, domain)
            self.order.learn(toks)
        detail = (f"form={form} tokens={sig.tokens:.0f} compression={sig.compression:.3f} "
                  f"repetition={sig.repetition:.3f} entropy_norm={sig.entropy_norm:.3f} "
                  f"words_per_sentence={sig.words_per_sentence:.1f} familiarity={sig.familiarity:.3f} "
                  f"common_share={sig.common_share:.3f} ordered={sig.ordered:.3f}")
        n = len(reasons) + len(extra)
        if n and idx >= 0:
            self.reason_count[idx] = n
        if n >= th.min_reasons or is_low_quality(reasons, th):
            v.spam = True
            v.flags += [(reason, score, detail) for reason, score in reasons] + list(extra)
        burst = self.velocity.observe(self.accounts(account), ts_s)
        if burst >= policy.velocity_burst_flag_at:
            v.flags.append(("velocity_burst", min(1.0, (burst - 1.0) / 4.0), f"burst={burst:.2f}"))
        return v

    def add_reason(self, idx: int, policy: Policy) -> bool:
        """One more reason for an earlier contribution; True when it now has enough to be
        spam (``quality_min_reasons``) and was not signalled before."""
        n = self.reason_count[idx] = self.reason_count.get(idx, 0) + 1
        if n >= policy.quality_min_reasons and idx not in self.signalled:
            self.signalled.add(idx)
            return True
        return False

    def duplicate(self, orig_idx: int, orig_account: str, orig_ts_s: float,
                  idx: int, account: str, ts_s: float) -> tuple[list[int], str]:
        """New farm members revealed by this duplicate edge, and the flag detail."""
        root = self.farms.add_edge(orig_idx, idx, self.accounts(orig_account), self.accounts(account),
                                   orig_ts_s, ts_s)
        if root < 0 or not self.farms.is_farm(root):
            return [], ""
        new = [int(m) for m in self.farms.farm_members(root) if int(m) not in self.farm_flagged]
        self.farm_flagged.update(new)
        n_accounts = len(self.farms.accounts_in_cluster(root))
        return new, (f"{n_accounts} accounts posted near-identical text within "
                     f"{self.farms.burst_s:g} s")

    def template(self, orig_idx: int, orig_account: str, idx: int, account: str) -> tuple[list[int], str]:
        """New members of a *template farm* revealed by this template edge (two prose texts
        of different accounts whose ordered word pairs nearly match, :meth:`Core._template_siblings`):
        once ``template_farm_min_accounts`` accounts post texts of one template, at any pace,
        every member is returned, each once. Honest authors do not share a template's words
        with two strangers (bench/quality.py measures this on real corpora)."""
        root = self.template_farms.add_edge(orig_idx, idx, self.accounts(orig_account), self.accounts(account))
        if root < 0 or not self.template_farms.is_farm(root):
            return [], ""
        new = [int(m) for m in self.template_farms.farm_members(root) if int(m) not in self.farm_flagged]
        self.farm_flagged.update(new)
        n_accounts = len(self.template_farms.accounts_in_cluster(root))
        return new, f"{n_accounts} accounts posted texts sharing one template's words"

    def agreement(self, orig_idx: int, orig_account: str, orig_ts_s: float,
                  idx: int, account: str, ts_s: float, min_items: int) -> tuple[list[int], str]:
        """An annotation agreeing with another account's (the same or a near-identical label
        on the same item): agreement, not a duplicate. Returns the contributions this edge
        reveals as a *label farm*, each once: those of accounts that took part, on at least
        ``min_items`` distinct items, in a burst of identical labels (``farm_min_accounts``
        accounts within ``annotation_burst_s``). Honest annotators label at their own pace;
        a farm posts the same labels from many accounts at once, item after item."""
        root = self.label_farms.add_edge(orig_idx, idx, self.accounts(orig_account), self.accounts(account),
                                         orig_ts_s, ts_s)
        if root < 0 or not self.label_farms.is_farm(root):
            return [], ""
        members = [int(m) for m in self.label_farms.farm_members(root)]
        touched = set()
        for m in members:
            a = int(self.label_farms.account[m])
            self.label_items.setdefault(a, set()).add(root)
            self.label_burst_members.setdefault(a, set()).add(m)
            touched.add(a)
        new = sorted(m for a in touched if len(self.label_items[a]) >= min_items
                     for m in self.label_burst_members[a] if m not in self.farm_flagged)
        self.farm_flagged.update(new)
        return new, (f"in bursts of identical labels ({self.label_farms.min_accounts}+ accounts within "
                     f"{self.label_farms.burst_s:g} s) on {min_items}+ items")
