"""The attribution engine inside the core: near-duplicates, lineage, evidence, exact credits."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from support.events_factory import LEGAL_DE, MEDICAL, contribution, model, usage

from poa_stream.scenario import generate
from poa_stream.processors.replay import process_all


run = process_all


C, M, U = "poa.contributions", "poa.models", "poa.usage"


def test_near_duplicates_point_to_the_family_root(settings):
    words = LEGAL_DE.split()
    edited = " ".join(words[:-1] + ["vereinbart"])  # one word changed
    edited2 = " ".join(["Hinweis:"] + words[:-1] + ["vereinbart"])
    core, out = run(settings, [(C, contribution("e1", "c1", "alice", "d", LEGAL_DE, 0)),
                               (C, contribution("e2", "c2", "mallory", "d", edited, 1)),
                               (C, contribution("e3", "c3", "eve", "d", edited2, 2))])
    assert (core.contribs["c2"].status, core.contribs["c2"].duplicate_of) == ("duplicate", "c1")
    assert core.contribs["c3"].duplicate_of == "c1"
    flags = {f["contribution_id"]: f for f in out.rows["flags"]}
    assert flags["c2"]["reason"] == "near_duplicate" and flags["c2"]["score"] >= 0.8


def test_inherit_passes_attribution_up_the_lineage(settings):
    core, out = run(settings, [
        (C, contribution("e1", "a", "alice", "d-base", LEGAL_DE, 0)),
        (C, contribution("e2", "b", "bob", "d-ft", MEDICAL, 0)),
        (M, model("e3", "P", "op", ["d-base"], minute=1)),
        (M, model("e4", "F", "op2", ["d-ft"], base=["P"], method="finetune", minute=2)),
        (U, usage("e5", "r", "F", 1_000_000, "Zitat: " + LEGAL_DE, 3)),
    ])
    attr = {(a["contribution_id"], a["via_model"]): (round(a["weight"], 6), a["evidence"]) for a in out.rows["attributions"]}
    assert attr == {("a", "P"): (0.5, "span"), ("pool:d-ft", "F"): (0.5, "pool")}
    assert out.rows["usage"][0]["lineage_share"] == pytest.approx(0.5)
    credits = {r["account"]: r["amount"] for r in out.rows["reward_ledger"]
               if r["role"] in ("contributor", "pool", "escrow")}
    # bob's half waits in d-ft's pool with its validator part (no validator voted on a);
    # alice's half is held in escrow until validators accept "a"
    assert credits == {"escrow:a": 350_000, "pool:d-ft": 350_000 + 50_000}


texts = st.lists(st.sampled_from("alpha beta gamma delta epsilon zeta eta theta iota kappa".split()),
                 min_size=12, max_size=40).map(" ".join)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(docs=st.lists(st.tuples(st.sampled_from(["d1", "d2", "d3"]), texts), min_size=1, max_size=8),
       model_nets=st.lists(st.sampled_from(["d1", "d2", "d3"]), min_size=1, max_size=2, unique=True),
       pick=st.integers(0, 7), fee=st.integers(0, 10**9))
def test_weights_stay_in_lineage_and_credits_are_exact(settings, docs, model_nets, pick, fee):
    recs = [(C, contribution(f"c{i}", f"k{i}", f"acct{i}", dn, text, 0)) for i, (dn, text) in enumerate(docs)]
    recs.append((M, model("m", "M", "op", model_nets, minute=1)))
    out_text = docs[pick % len(docs)][1] + " " + docs[(pick + 1) % len(docs)][1]
    recs.append((U, usage("u", "r", "M", fee, out_text, 2)))
    core, out = run(settings, recs)
    attr = out.rows.get("attributions", [])
    for a in attr:
        assert a["datanet"] in model_nets
        if a["evidence"] == "pool":
            assert a["contributor"] == "pool:" + a["datanet"] and a["contribution_id"] == a["contributor"]
        else:
            assert core.contribs[a["contribution_id"]].status != "duplicate"
    if attr:
        assert sum(a["weight"] for a in attr) == pytest.approx(1.0)
    assert sum(r["amount"] for r in out.rows.get("reward_ledger", []) if r["source"] == "fee") == fee


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    from poa_stream.settings import Settings
    scen = generate(seed=7)
    core, out = run(Settings(home=tmp_path_factory.mktemp("s")), [(t, l.encode()) for t, l in scen.records])
    return scen.truth, core, out


def test_scenario_duplicates_found(seeded):
    truth, core, _ = seeded
    dup = [cid for cid, c in truth["contributions"].items() if c["class"] in ("exact_dup", "near_dup")]
    found = [cid for cid in dup if core.contribs[cid].status == "duplicate"]
    assert len(found) / len(dup) >= 0.95
    honest = [cid for cid, c in truth["contributions"].items() if c["class"] == "honest"]
    assert sum(core.contribs[c].status == "duplicate" for c in honest) == 0
    for cid in found:
        assert core.contribs[cid].duplicate_of == truth["contributions"][cid]["duplicate_of"]


def test_scenario_copied_spans_get_the_weight(seeded):
    """The contribution a usage copied its longest span from is attributed (when eligible:
    validators may have rejected it, which the spam/validator engine decides)."""
    truth, core, out = seeded
    by_req: dict[str, dict[str, float]] = {}
    for a in out.rows["attributions"]:
        if a["evidence"].startswith("span"):
            d = by_req.setdefault(a["request_id"], {})
            d[a["contribution_id"]] = d.get(a["contribution_id"], 0.0) + a["weight"]
    hits = total = 0
    for rid, u in truth["usage"].items():
        longest = max(u["copied"], key=lambda c: c["words"], default=None)
        if longest is None or longest["words"] < 20 or core.contribs[longest["contribution_id"]].status == "rejected":
            continue
        total += 1
        hits += longest["contribution_id"] in by_req.get(rid, {})
    assert total > 100 and hits / total >= 0.95


def test_scenario_duplicates_earn_nothing(seeded):
    truth, _, out = seeded
    dups = {cid for cid, c in truth["contributions"].items() if c["class"] in ("exact_dup", "near_dup")}
    attributed = {a["contribution_id"] for a in out.rows["attributions"]}
    assert not (dups & attributed)
