"""The ledger policy: every number that decides who is paid what, in one versioned value.

Contract:
- :class:`Policy` holds every ledger-relevant setting and constant: fee shares and the
  treasury, the epoch length and emission schedule, the signature rule and the keys in force,
  attribution (span length, influence mix, lineage inherit defaults), near-duplicate detection
  (threshold, MinHash size, seed, shingle length), the spam heuristics (quality thresholds,
  familiarity model, velocity, sybil-farm rule), the validator model (Dawid-Skene priors,
  stake weights, status thresholds, sweep passes, suspect rules) and the event-time ordering
  lateness. Nothing in attribution/ or processors/ hard-codes one of these numbers: the core
  passes them from the policy in force.
- :meth:`Policy.fingerprint` is a SHA-256 of its canonical JSON (16 hex digits). The store
  records every policy it ran under (table ``policy``: version, effective epoch, fingerprint,
  JSON) and each ``epochs`` row carries the fingerprint of the policy that closed it.
- A worker or replay whose configured policy differs from the store's latest refuses to
  start (:class:`PolicyMismatch`, naming each differing field); changing policy is the explicit
  ``poa policy apply --effective-epoch E``, which takes effect at the start of epoch ``E``
  (later than any processed event's epoch, so no closed epoch is rewritten). Fields in
  :data:`STRUCTURAL` shape the indexes or the epoch grid and are fixed for a store's life.
- :class:`PolicySchedule` answers "which policy is in force in epoch e" for the core; a
  replay of the same log under the same schedule is identical, a key rollout included
  (events accepted under the old rule stay accepted).
- Hostile input is bounded by policy too: the genesis of the emission schedule, how far an
  event's time may run ahead of its Kafka record (or of the replayed stream), how long an
  event may wait for a reference, how much work span matching may do per usage, and
  :data:`MAX_FEE_MICRO` (a contract constant, not a policy field: the contract is static).

This module imports nothing of the project: everything may import it.
"""
from __future__ import annotations

import bisect
import fnmatch
import hashlib
from typing import Literal
import json
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

MICRO_PER_TOKEN = 1_000_000
# The largest fee one usage event may carry (2**53 micro-units, about 9e9 tokens): the event
# contract (streams/events.py), `poa emit` (which validates with the contract) and the exact
# split (attribution/split.py) all use this one number. Sums of fees are Int128 in the store.
MAX_FEE_MICRO = 1 << 53
MAX_INFLUENCE = 1024  # entries of a usage's influence list (the contract's cap)


class PolicyMismatch(RuntimeError):
    """The configured policy is not the one the store runs under."""


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- fees: shares of each usage fee in basis points (sum 10_000)
    share_contributors_bps: int = Field(7000, ge=0, le=10_000)
    share_operator_bps: int = Field(2000, ge=0, le=10_000)
    share_validators_bps: int = Field(500, ge=0, le=10_000)
    share_protocol_bps: int = Field(500, ge=0, le=10_000)
    treasury_account: str = "protocol:treasury"

    # --- epochs and emissions; time bounds (hostile input cannot move the schedule)
    epoch_s: int = Field(86_400, gt=0)
    # the emission schedule starts here (budget decay counts epochs from it); events dated
    # earlier are dead-lettered
    genesis_ts: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)
    # worker: an event dated more than this after its Kafka record's timestamp (input topics
    # use LogAppendTime: the broker's clock) is dead-lettered
    max_future_skew_s: float = Field(3600.0, ge=0.0)
    # worker: an event dated more than this before its record's timestamp is dead-lettered
    # (None: no bound, so backfills of old events work; genesis still bounds them)
    max_past_skew_s: float | None = Field(None, ge=0.0)
    # replay (no record timestamps): an event dated more than this after the latest event
    # time seen in the stream is dead-lettered
    max_stream_jump_s: float = Field(30 * 86_400.0, ge=0.0)
    # an event waiting for a reference (model, base model, contribution) is dead-lettered
    # once event time has moved this far past it (None: one epoch)
    wait_expiry_s: float | None = Field(None, gt=0.0)
    emission_per_epoch_micro: int = Field(1_000 * MICRO_PER_TOKEN, ge=0, le=1 << 53)
    emission_decay_bps: int = Field(100, ge=0, le=10_000)
    emission_contributors_bps: int = Field(8000, ge=0, le=10_000)
    # what the contributors' emission pool follows at epoch close: "validated_supply" (the
    # distinct token windows of their accepted contributions: usage moves no emission, so
    # reporting usage of one's own data cannot pay) or "usage" (attribution evidence per
    # usage event, the v1 rule: open to wash usage; kept to replay old stores)
    emission_contributor_basis: Literal["validated_supply", "usage"] = "validated_supply"

    # --- signatures: accounts with a key must sign (when required); the keys in force
    require_signatures: bool = False
    keys: dict[str, str] = {}

    # --- attribution
    span_min_tokens: int = Field(8, ge=2)
    # per usage: occurrences of one n-gram followed in the corpus, and token comparisons in
    # all (a repetitive 1 MiB output cannot make matching cost contributions x output)
    span_max_occurrences: int = Field(16, ge=1)
    span_work_budget: int = Field(2_000_000, ge=1000)
    influence_mix: float = Field(0.3, ge=0.0, le=1.0)
    # per usage: the contributions credited by evidence (span, influence), strongest first;
    # what has no evidence (or is cut) goes to the datanet pools (processors/pools.py)
    attribution_top_k: int = Field(32, ge=1, le=4096)
    # per usage: the matched spans kept as evidence, ceil(fraction x output tokens) (at least
    # one), the longest and rarest first (OLMoTrace keeps the top 0.05 L spans)
    span_top_fraction: float = Field(0.05, gt=0.0, le=1.0)
    # a kept span credits only its earliest source (the first upload that contains it)
    span_first_source: bool = True
    # --- suspected wash usage, flagged per epoch and operator (processors/wash.py); moves no money
    wash_min_events: int = Field(20, ge=1)  # usage events of an operator in the epoch
    wash_linked_min_share: float = Field(0.2, gt=0.0, le=1.0)  # of its contributor weight
    wash_low_fee_micro: int = Field(1_000, ge=0)  # a fee at most this is "near zero"
    wash_burst_events: int = Field(50, ge=1)  # low-fee events in one window
    wash_burst_window_s: float = Field(600.0, gt=0.0)
    wash_loop_share: float = Field(0.8, gt=0.0, le=1.0)  # credited only by this operator
    wash_loop_owned_share: float = Field(0.9, gt=0.5, le=1.0)  # of an account's usage credit
    wash_loop_others_ratio: float = Field(0.25, gt=0.0, le=1.0)  # of an even share elsewhere
    wash_loop_max_accounts: int = Field(3, ge=1)
    inherit_defaults: dict[str, float] = {"pretrain": 0.0, "finetune": 0.5, "lora": 0.7,
                                          "distill": 0.8, "merge": 1.0}

    # --- near duplicates: estimated Jaccard of word k-gram shingles
    neardup_threshold: float = Field(0.8, gt=0.0, lt=1.0)
    # a new text whose words lie, for this share, in spans of one earlier text is its copy
    copy_containment: float = Field(0.8, gt=0.0, le=1.0)
    copy_containment_structured: float = Field(0.9, gt=0.0, le=1.0)  # code and tables
    # templated text: an earlier prose text of ANOTHER account with this estimated Jaccard of
    # ordered word pairs at distance 1..template_skip (slot-filled ad copy keeps its template's
    # words in order, not its 5-grams) is a "templated" reason on both; alone it is not spam.
    # Real honest prose: p99 0.10 (bench/quality.py, calibration half); templates >= 0.34
    template_jaccard: float = Field(0.34, gt=0.0, lt=1.0)
    template_skip: int = Field(3, ge=1)
    # the text form a datanet declares ("code", "table" or "prose"), by datanet name or glob
    # pattern (exact name first, then patterns in sorted order): its uploads are judged as that form instead of the
    # form guessed from their lines (attribution.quality.text_form)
    datanet_forms: dict[str, Literal["prose", "code", "table"]] = {}
    # ... and texts of this many accounts linked by such edges are a template farm (spam)
    template_farm_min_accounts: int = Field(3, ge=2)
    minhash_num_perm: int = Field(128, ge=16)
    minhash_seed: int = 1
    shingle_k: int = Field(5, ge=1)

    # --- spam heuristics (attribution/quality.py, velocity.py, clusters.py)
    # quality thresholds, calibrated on the calibration half of real corpora (bench/quality.py
    # --calibrate: honest prose p0.5 / p99.5 of each signal; not on our generator): sentences
    # under 3.5 or over 140 words on average; word-bigram familiarity does not separate honest
    # multilingual text (p0.5 = 0.00, median 0.12) from word salad (p99.5 = 0.08), so it is off
    quality_min_tokens: float = 8.0
    quality_min_tokens_stats: float = 16.0
    quality_max_compression: float = 0.20
    quality_max_repetition: float = 0.60
    quality_min_entropy_norm: float = 0.50
    quality_min_words_per_sentence: float = 3.5
    quality_max_words_per_sentence: float = 150.0
    quality_min_familiarity: float = 0.0  # off: see below
    quality_min_reasons: int = 2
    quality_min_common_share: float = 0.09  # "uncommon" (attribution.quality.Commonness)
    # "scrambled": adjacent known words rarely seen side by side (attribution.quality.ordered_share,
    # word order judged against the shipped reference model and earlier clean prose); selective
    # enough to mark spam alone (bench/quality.py --calibrate: honest prose p0.5)
    quality_min_ordered: float = 0.05
    quality_decisive_reasons: list[str] = ["scrambled"]
    quality_reference: Literal["builtin", "none"] = "builtin"
    common_warm_tokens: int = Field(3_000, ge=1)
    common_word_frac: float = Field(0.002, gt=0.0, lt=1.0)
    # code and tables (attribution.quality.text_form): only degenerate content is judged
    quality_max_compression_structured: float = 0.10
    quality_max_repetition_structured: float = 0.90
    quality_min_entropy_norm_structured: float = 0.35
    familiarity_bits: int = Field(22, ge=8, le=30)
    familiarity_warm_bigrams: int = 1_000
    velocity_window_s: float = 600.0
    velocity_alpha: float = 0.1
    velocity_prior_gap_s: float = 86_400.0
    velocity_burst_flag_at: float = 3.0
    farm_min_accounts: int = Field(4, ge=2)
    farm_burst_s: float = 600.0
    # annotations: the same label from other accounts is agreement; a label farm is accounts
    # in bursts of identical labels (farm_min_accounts within annotation_burst_s) on
    # annotation_farm_min_items items or more
    annotation_burst_s: float = Field(60.0, ge=0.0)
    annotation_farm_min_items: int = Field(2, ge=1)
    spam_prior: float = Field(0.05, gt=0.0, lt=1.0)  # P(good) the validator model gives to spam

    # --- validator model (attribution/reliability.py) and statuses
    ds_prior_good: float = 0.7
    ds_prior_reliability: float = 0.8
    ds_prior_strength: float = 4.0
    ds_prior_votes: float = 25.0
    ds_class_prior_strength: float = 10.0
    ds_stake_ref: float = 1e6
    ds_w_min: float = 0.25
    ds_w_max: float = 1.0
    ds_allow_inverted: bool = True
    ds_retro: int = 32
    ds_retro_window: int = 1024
    status_accept_at: float = 0.8
    status_reject_at: float = 0.2
    default_stake: int = 1_000_000
    epoch_sweep_passes: int = Field(1, ge=0)
    # the validator weights that usage fees, pool settlements and emissions pay by:
    # "epoch_snapshot" (published at each epoch close, after the sweep, as `validator_weights`
    # rows; a usage in epoch e pays by the weights of e - 1's close, a validator absent from
    # them by 0: the order of votes within an epoch moves no payment, and a validator earns
    # once one close has judged it) or "live" (the model after the last vote, the v1 rule:
    # kept to replay old stores)
    validator_fee_weights: Literal["epoch_snapshot", "live"] = "epoch_snapshot"
    suspect_min_accepts: int = 10
    suspect_min_share: float = 0.35
    suspect_min_lift: float = 2.0
    suspect_min_votes: int = 20
    suspect_max_reliability: float = 0.45

    # --- event-time ordering
    order_lateness_s: float = Field(3600.0, ge=0.0)
    # a source (topic partition) that delivered this many messages in a row without a new
    # event (re-deliveries, dead letters) stops holding the watermark until it makes progress
    order_stall_messages: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "Policy":
        total = (self.share_contributors_bps + self.share_operator_bps
                 + self.share_validators_bps + self.share_protocol_bps)
        if total != 10_000:
            raise ValueError(f"fee shares must sum to 10000 bps, got {total}; "
                             "set POA_SHARE_*_BPS so that they do")
        if not self.status_reject_at < self.status_accept_at:
            raise ValueError("status_reject_at must be below status_accept_at")
        if self.genesis_ts.tzinfo is None:
            raise ValueError("genesis_ts needs a UTC offset")
        if self.genesis_ts < datetime(1970, 1, 1, tzinfo=timezone.utc):
            raise ValueError("genesis_ts must not be before 1970-01-01 (epoch numbers are >= 0)")
        return self

    @property
    def genesis_epoch(self) -> int:
        return int(self.genesis_ts.timestamp()) // self.epoch_s

    @property
    def wait_expiry(self) -> float:
        """Seconds of event time a waiting event may wait (default: one epoch)."""
        return self.wait_expiry_s if self.wait_expiry_s is not None else float(self.epoch_s)

    # ---- identity
    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    def diff(self, other: "Policy") -> list[str]:
        """``field: mine -> other`` for every field that differs (keys: by account)."""
        a, b = self.model_dump(mode="json"), other.model_dump(mode="json")
        out = []
        for k in a:
            if a[k] == b[k]:
                continue
            if k == "keys":
                for acct in sorted(set(a[k]) | set(b[k])):
                    if a[k].get(acct) != b[k].get(acct):
                        out.append(f"keys[{acct}]: {_short(a[k].get(acct))} -> {_short(b[k].get(acct))}")
            else:
                out.append(f"{k}: {a[k]!r} -> {b[k]!r}")
        return out

    @property
    def shares_bps(self) -> tuple[int, int, int, int]:
        """(contributors, operator, validators, protocol) in basis points."""
        return (self.share_contributors_bps, self.share_operator_bps,
                self.share_validators_bps, self.share_protocol_bps)

    def form_of(self, datanet: str) -> str | None:
        """The form ``datanet_forms`` declares for ``datanet``, or None (guess it)."""
        if datanet in self.datanet_forms:
            return self.datanet_forms[datanet]
        for pattern in sorted(self.datanet_forms):
            if fnmatch.fnmatchcase(datanet, pattern):
                return self.datanet_forms[pattern]
        return None

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        return cls.model_validate_json(text)


# Fields that shape the indexes, the validator model's state or the epoch grid: fixed for
# the life of a store (a change needs a new store and a full replay).
STRUCTURAL = frozenset({
    "epoch_s", "genesis_ts", "order_stall_messages", "span_min_tokens", "neardup_threshold", "template_jaccard", "template_skip", "quality_reference", "minhash_num_perm", "minhash_seed",
    "shingle_k", "familiarity_bits", "ds_prior_good", "ds_prior_reliability", "ds_prior_strength",
    "ds_prior_votes", "ds_class_prior_strength", "ds_stake_ref", "ds_w_min", "ds_w_max",
    "ds_allow_inverted", "ds_retro", "ds_retro_window", "order_lateness_s",
    "familiarity_warm_bigrams", "common_warm_tokens", "common_word_frac", "velocity_window_s", "velocity_alpha", "velocity_prior_gap_s",
    "farm_min_accounts", "farm_burst_s", "annotation_burst_s", "template_farm_min_accounts",
})


def structural_changes(old: Policy, new: Policy) -> list[str]:
    return [d for d in old.diff(new) if d.split(":")[0].split("[")[0] in STRUCTURAL]


def _short(v) -> str:
    return "none" if v is None else (v[:12] + "..." if isinstance(v, str) and len(v) > 15 else str(v))


def read_keys_file(path: Path | None) -> dict[str, str]:
    """account -> hex ed25519 public key from a JSON keys file (empty without one)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the keys file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in data.items()):
        raise ValueError(f"the keys file {path} must hold a JSON object account -> hex key")
    return dict(sorted(data.items()))


class PolicySchedule:
    """Policies by effective epoch: ``[(effective_epoch, policy), ...]`` in version order."""

    def __init__(self, entries: list[tuple[int, Policy]]):
        if not entries:
            raise ValueError("a policy schedule needs at least one policy")
        self.entries = sorted(entries, key=lambda e: e[0])
        self._starts = [e for e, _ in self.entries]
        base = self.entries[0][1]
        for _, p in self.entries[1:]:
            if changed := structural_changes(base, p):
                raise ValueError("a store's structural policy cannot change: " + "; ".join(changed))

    @classmethod
    def single(cls, policy: Policy) -> "PolicySchedule":
        return cls([(0, policy)])

    @property
    def base(self) -> Policy:
        """The first policy: its structural fields hold for the store's life."""
        return self.entries[0][1]

    @property
    def latest(self) -> Policy:
        return self.entries[-1][1]

    def at(self, epoch: int | None) -> Policy:
        """The policy in force in ``epoch`` (None: the first)."""
        if epoch is None:
            return self.entries[0][1]
        i = bisect.bisect_right(self._starts, epoch) - 1
        return self.entries[max(0, i)][1]
