"""Faking usage must not pay: wash-usage strategies against the reward rules (README "Economics").

Each strategy of poa/adversarial.py runs beside its baseline (the same accounts, supply and
models, without the attacker's usage), at emission-to-fee ratios of 0.1, 1 and 10. Under
the default rule (emissions follow validated supply) the attacker's usage never earns
more than it paid and the honest contributors keep at least 90% of their rewards; under
the v1 rule (emissions follow usage) the same attack pays, which shows the test can fail."""
from __future__ import annotations

import json

import pytest

from poa_stream import adversarial as A
from poa_stream.settings import Settings
from poa_stream.processors.replay import process_all

N_FAKE = 900  # fake usage events per attack (the inequality does not depend on the count)


def _run(tmp_path, strategy, ratio, attack, basis="validated_supply"):
    pf = tmp_path / f"policy-{basis}-{ratio}.json"
    pf.write_text(json.dumps({**A.policy_for(strategy, ratio), "emission_contributor_basis": basis}))
    s = Settings(home=tmp_path / "home", policy_file=pf)
    core, out = process_all(s, A.world(strategy, ratio, attack, n_fake=N_FAKE))
    return core, out.rows


@pytest.mark.parametrize("ratio", [0.1, 1, 10])
@pytest.mark.parametrize("strategy", A.STRATEGIES)
def test_wash_usage_never_pays_and_honest_contributors_keep_their_rewards(tmp_path, strategy, ratio):
    core, atk = _run(tmp_path, strategy, ratio, True)
    _, base = _run(tmp_path, strategy, ratio, False)
    a, b = A.outcome(atk, strategy), A.outcome(base, strategy)
    fake = [u for u in atk["usage"] if u["model_id"] != "m-honest"]
    assert len(fake) >= N_FAKE - 10  # the attack ran
    net = a["attacker_rewards"] - b["attacker_rewards"] - a["attacker_fees"]
    assert net <= 0, f"{strategy} at {ratio}: the attacker's usage earned {net} micro-units more than it paid"
    if a["attacker_fees"] > 0:  # the protocol share of every fee is always lost to the attacker
        assert net <= -a["attacker_fees"] * core.P.share_protocol_bps // 10_000 + len(fake)
    assert a["honest_contributors"] >= 0.9 * b["honest_contributors"]
    # emissions still sum exactly to their budget (or carry over exactly)
    for e in atk["epochs"]:
        assert e["emitted"] + e["carried_out"] == e["budget"] + e["carried_in"]
        emitted = sum(r["amount"] for r in atk["reward_ledger"]
                      if r["source"] == "emission" and r["epoch"] == e["epoch"])
        assert emitted == e["emitted"]


@pytest.mark.parametrize("strategy", ["fee0", "sybil"])
def test_under_the_v1_usage_rule_the_same_attack_pays(tmp_path, strategy):
    """The control: emissions split by usage evidence (the v1 rule) hand the attacker the
    pool; if this stopped failing the attack, the test above would prove nothing."""
    _, atk = _run(tmp_path, strategy, 10, True, basis="usage")
    _, base = _run(tmp_path, strategy, 10, False, basis="usage")
    a, b = A.outcome(atk, strategy), A.outcome(base, strategy)
    assert a["attacker_rewards"] - b["attacker_rewards"] - a["attacker_fees"] > 0
    assert a["honest_contributors"] < 0.9 * b["honest_contributors"]


def test_emissions_follow_validated_supply(tmp_path):
    """Contributors' emissions are split by the distinct token windows of their accepted
    contributions; pending and rejected supply earns none."""
    from poa_stream.processors.corpus import pool_weight
    from poa_stream.attribution.text import token_hashes
    core, rows = _run(tmp_path, "fee0", 1, False)
    last = rows["epochs"][-1]["epoch"]
    got = {r["account"]: r["amount"] for r in rows["reward_ledger"]
           if r["source"] == "emission" and r["role"] == "contributor" and r["epoch"] == last}
    w = {}
    for c in core.by_idx:
        if c.status == "accepted":
            w[c.contributor] = w.get(c.contributor, 0) + int(core.corpus.weight[c.idx])
    assert set(got) == set(w) and len(w) >= 5
    total = sum(got.values())
    for acct, amount in got.items():
        assert abs(amount - total * w[acct] / sum(w.values())) <= 1
    assert pool_weight(token_hashes("a b c d e f g h i"), 8) == 2
