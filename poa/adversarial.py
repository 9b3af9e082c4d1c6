"""Adversarial worlds: wash usage against the reward rules (issue "demand integrity").

An honest world: four contributors (three texts each) on one datanet, four validators
accepting them, an honest operator reporting 600 paid inferences over three days that
quote those texts. An attacker adds original supply of its own (validated like any
other) and a model on the same datanet, then reports usage of that model whose outputs
copy its own text. Strategies (``STRATEGIES``):

- ``fee0``: 3,000 usage events at fee 0;
- ``fee1``: 3,000 at 1 token (the attacker is operator and contributor);
- ``sybil``: 10 contributor/operator pairs, 300 events each at 0.2 token;
- ``micro``: 3,000 at 1 micro-unit;
- ``spread``: 3,000 at fee 0 spread evenly over the three days (not in bursts);
- ``copycat``: the attacker first uploads a copy of an honest passage (plus text of its
  own), then reports 3,000 usages at 0.1 token quoting that passage.

``world(strategy, ratio, attack=True)`` returns the event records ``[(topic, raw)]``;
``attack=False`` is the same world (same accounts, contributions, models) without the
attacker's usage: the baseline that isolates what the usage itself earns. ``ratio`` is the
emission budget per epoch over the honest fees per epoch (0.1, 1, 10 ...): the caller sets
``emission_per_epoch_micro = emission_for(ratio)`` (:func:`policy_for` gives the whole policy
file, signing keys included). Deterministic: seeded, no wall clock.
"""
from __future__ import annotations

import hashlib
import json
import random
from datetime import datetime, timedelta, timezone

from poa_stream.scenario import _text

DN = "medical-en"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
MICRO = 1_000_000
HONEST_USAGE, HONEST_FEE = 600, MICRO
DAYS = 3
STRATEGIES = ("fee0", "fee1", "sybil", "micro", "spread", "copycat")
HONEST = tuple(f"honest-{i}" for i in range(4))
VALIDATORS = tuple(f"validator-{i}" for i in range(4))
ATTACKER = "attacker"


def policy_for(strategy: str, ratio: float) -> dict:
    """The policy fields of a world: its emission budget, and the registered signing keys
    (``keys``: account -> hex ed25519 public key). In ``fee1`` the attacker registers its
    contributor and operator accounts with one key (they are one party); every other
    account has a key of its own. Keys are derived from a seed: no wall clock, no entropy."""
    from nacl.signing import SigningKey

    def key(name: str) -> str:
        return SigningKey(hashlib.sha256(f"adversarial:{name}".encode()).digest()).verify_key.encode().hex()
    accounts = sorted(set(HONEST) | {"honest-operator"} | attacker_accounts(strategy))
    keys = {a: key(a) for a in accounts}
    if strategy == "fee1":
        keys[ATTACKER + "-op"] = keys[ATTACKER]
    return {"emission_per_epoch_micro": emission_for(ratio), "keys": keys}


def emission_for(ratio: float) -> int:
    """Emission budget per epoch (micro-units) that is ``ratio`` x the honest fees per epoch."""
    return int(ratio * HONEST_USAGE * HONEST_FEE / DAYS)


def attacker_accounts(strategy: str) -> set[str]:
    if strategy == "sybil":
        return {f"sybil-{i}" for i in range(10)} | {f"sybil-op-{i}" for i in range(10)}
    return {ATTACKER, ATTACKER + "-op"}


def _ts(ms: float) -> str:
    return (T0 + timedelta(milliseconds=int(ms))).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _quote(R: random.Random, text: str, n: int = 20) -> str:
    w = text.split()
    i = R.randint(0, max(0, len(w) - n))
    return " ".join(w[i:i + n])


def world(strategy: str, ratio: float = 1.0, attack: bool = True, seed: int = 13,
          n_fake: int = 3000) -> list[tuple[str, bytes]]:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    R = random.Random(seed)
    ev: list[tuple[float, int, str, dict]] = []
    n = [0]

    def emit(ms: float, topic: str, obj: dict) -> None:
        n[0] += 1
        obj = {"event_id": f"{obj['type'][0]}-{n[0]:06d}", "ts": _ts(ms), **obj}
        ev.append((ms, n[0], topic, obj))

    def contribute(ms, who, cid, text):
        emit(ms, "poa.contributions", {"type": "contribution", "contribution_id": cid, "contributor": who,
                                       "datanet": DN, "kind": "dataset", "content": text})
        for j, v in enumerate(VALIDATORS):  # every supply is validated the same way
            emit(ms + 3_600_000 + j * 1000, "poa.validations",
                 {"type": "validation", "validator": v, "contribution_id": cid, "verdict": "accept",
                  "stake": 100 * MICRO})

    def register(ms, mid, op):
        emit(ms, "poa.models", {"type": "model", "model_id": mid, "operator": op, "method": "pretrain",
                                "datanets": [{"datanet": DN, "weight": 1.0}]})

    def use(ms, mid, rid, fee, output):
        emit(ms, "poa.usage", {"type": "usage", "model_id": mid, "request_id": rid, "fee": fee,
                               "output": output})

    texts = {}
    for i, who in enumerate(HONEST):
        for k in range(3):
            cid = f"{who}-c{k}"
            texts[cid] = _text(R, DN, 150)
            contribute(60_000 * (3 * i + k), who, cid, texts[cid])
    register(30 * 60_000, "m-honest", "honest-operator")
    span_ms = DAYS * 86_400_000
    honest_ids = sorted(texts)
    for u in range(HONEST_USAGE):
        cid = R.choice(honest_ids)
        ms = 4 * 3_600_000 + u * (span_ms - 5 * 3_600_000) / HONEST_USAGE
        use(ms, "m-honest", f"h-{u}", HONEST_FEE, "Answer: " + _quote(R, texts[cid]) + ". Hope this helps.")

    # the attacker's own supply and models (present in the baseline too)
    pairs = ([(f"sybil-{i}", f"sybil-op-{i}", f"m-sybil-{i}") for i in range(10)] if strategy == "sybil"
             else [(ATTACKER, ATTACKER + "-op", "m-attack")])
    own = {}
    for i, (who, op, mid) in enumerate(pairs):
        own[who] = _text(R, DN, 150)
        text = own[who]
        if strategy == "copycat":  # a copy of an honest passage first, then its own words
            own[who] = _quote(R, texts[honest_ids[0]], 40)
            text = own[who] + " " + _text(R, DN, 110)
        contribute(2 * 3_600_000 + i * 60_000, who, f"{who}-c0", text)
        register(2.5 * 3_600_000 + i * 60_000, mid, op)
    if not attack:
        return _records(ev)
    fee = {"fee0": 0, "spread": 0, "fee1": MICRO, "micro": 1, "sybil": MICRO // 5, "copycat": MICRO // 10}[strategy]
    per = n_fake // len(pairs)
    for who, op, mid in pairs:
        for u in range(per):
            if strategy == "spread":
                ms = 5 * 3_600_000 + u * (span_ms - 6 * 3_600_000) / per
            else:  # bursts: a few minutes every six hours
                ms = 5 * 3_600_000 + (u % 10) * 6 * 3_600_000 + (u // 10) * 400
            quote = own[who] if strategy == "copycat" else _quote(R, own[who])
            use(ms, mid, f"{mid}-{u}", fee, "Sure. " + quote + " Anything else?")
    return _records(ev)


def _records(ev) -> list[tuple[str, bytes]]:
    ev.sort(key=lambda e: (e[0], e[1]))
    return [(topic, json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
            for _, _, topic, obj in ev]


def outcome(rows: dict, strategy: str) -> dict:
    """Rewards per group from a run's rows: attacker accounts, honest contributors, fees paid."""
    mine = attacker_accounts(strategy)
    ledger = rows.get("reward_ledger", [])
    fake = {u["event_id"] for u in rows.get("usage", []) if u["model_id"] != "m-honest"}
    return {"attacker_rewards": sum(r["amount"] for r in ledger if r["account"] in mine),
            "attacker_fees": sum(u["fee"] for u in rows.get("usage", []) if u["event_id"] in fake),
            "honest_contributors": sum(r["amount"] for r in ledger if r["account"] in HONEST)}
