"""attribution.reliability: online Dawid-Skene vs .py_func and a plain-Python reference;
validator ranking and accuracy on the seeded scenario (vs crowd-kit's batch DawidSkene)."""
import json
import math
from datetime import datetime

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import poa_stream.attribution.reliability as rel
from poa_stream.attribution.reliability import OnlineDawidSkene
from poa_stream.attribution.velocity import Interner
from poa_stream.scenario import generate

votes_st = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 12), st.booleans(),
                              st.sampled_from([0, 300_000, 1_000_000, 50_000_000])), max_size=60)


def dedup(vs):
    seen, out = set(), []
    for v, c, a, s in vs:
        if (v, c) not in seen:
            seen.add((v, c))
            out.append((v, c, a, s))
    return out


def reference(vs, prior_good=0.7, r=0.8, s=4.0, prior_votes=25.0, cps=10.0, stake_ref=1e6):
    """Plain Python, retro=0: the posterior of the voted contribution from all its votes with the
    current confusions; then all its votes re-credited with it."""
    pc = {(1, 1): s * r, (1, 0): s * (1 - r), (0, 0): s * r, (0, 1): s * (1 - r)}
    cnt, votes, post, credit = {}, {}, {}, {}
    out = []
    for v, c, a, stake in vs:
        a = int(a)
        votes.setdefault(c, []).append((v, a, min(1.0, max(0.25, math.log2(1 + stake / stake_ref)))))
        credit[(v, c)] = 0.0
        cnt[(v, 0, a)] = cnt.get((v, 0, a), 0.0) + 1.0
        voted = [x for x in post if x != c]
        pg = (sum(post[x] for x in voted) + cps * prior_good) / (len(voted) + cps)
        L = math.log(pg / (1 - pg))
        for u, b, w in votes[c]:
            n1 = cnt.get((u, 1, 0), 0) + cnt.get((u, 1, 1), 0)
            n0 = cnt.get((u, 0, 0), 0) + cnt.get((u, 0, 1), 0)
            f = prior_votes / (prior_votes + n0 + n1)
            g = (cnt.get((u, 1, b), 0) + f * pc[(1, b)]) / (n1 + f * s)
            bad = (cnt.get((u, 0, b), 0) + f * pc[(0, b)]) / (n0 + f * s)
            L += w * math.log(g / bad)
        p = 1 / (1 + math.exp(-max(-40, min(40, L))))
        post[c] = p
        for u, b, _ in votes[c]:
            d = p - credit[(u, c)]
            cnt[(u, 1, b)] = cnt.get((u, 1, b), 0.0) + d
            cnt[(u, 0, b)] = cnt.get((u, 0, b), 0.0) - d
            credit[(u, c)] = p
        out.append(p)
    return out


@settings(max_examples=100, deadline=None)
@given(vs=votes_st)
def test_online_matches_plain_python_reference(vs):
    vs = dedup(vs)
    ds = OnlineDawidSkene(retro=0)
    got = [ds.vote(v, c, a, s) for v, c, a, s in vs]
    assert np.allclose(got, reference(vs), rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(vs=votes_st, retro=st.integers(0, 4))
def test_kernels_match_py_func(vs, retro):
    vs = dedup(vs)
    if not vs:
        return
    v, c, a, s = (np.array(x) for x in zip(*vs))
    ds = OnlineDawidSkene(retro=retro, retro_window=8)
    got = ds.vote_many(v, c, a, s)
    jit = (rel.refresh, rel.add_votes)
    try:
        rel.refresh, rel.add_votes = rel.refresh.py_func, rel.add_votes.py_func
        py = OnlineDawidSkene(retro=retro, retro_window=8)
        want = py.vote_many(v, c, a, s)
    finally:
        rel.refresh, rel.add_votes = jit
    assert np.allclose(got, want, rtol=1e-12, atol=1e-15)
    assert np.allclose(ds.conf, py.conf, rtol=1e-12, atol=1e-12)


def test_duplicates_priors_stakes_and_determinism():
    ds = OnlineDawidSkene()
    p0 = ds.vote(0, 0, True, 1e6)
    assert p0 > ds.prior_good and ds.status(0) in ("pending", "accepted")
    with pytest.raises(ValueError, match="already voted"):
        ds.vote(0, 0, False, 1e6)
    assert ds.n_votes == 1 and ds.votes(0) == 1
    before = ds.class_prior
    low = ds.set_prior(0, 0.02)
    assert low < p0 and ds.cls[1] == 0 and ds.class_prior != before
    assert ds.posterior(5) == ds.class_prior and ds.set_prior(7, 0.1) == pytest.approx(0.1)
    assert ds.stake_weights([0, 1e6, 1e12]).tolist() == [0.25, 1.0, 1.0]
    rng = np.random.default_rng(3)
    v, c = rng.integers(0, 9, 3000), rng.integers(0, 700, 3000)
    keep = np.unique(v * 1000 + c, return_index=True)[1]
    keep.sort()
    truth, skill = rng.random(700) < 0.7, np.array([0.95, 0.9, 0.9, 0.85, 0.8, 0.5, 0.5, 0.3, 0.9])
    v, c = v[keep], c[keep]
    accept = truth[c] == (rng.random(keep.size) < skill[v])
    args = (v, c, accept, rng.integers(0, 500_000_000, keep.size))
    x, y = OnlineDawidSkene(), OnlineDawidSkene()
    assert np.array_equal(x.vote_many(*args), y.vote_many(*args)) and np.array_equal(x.conf, y.conf)
    x.sweep(30)
    snap = x.post.copy()
    x.sweep(1)
    assert np.abs(x.post - snap).max() < 1e-4  # sweeps converge to an EM fixed point
    assert ((x.post[:700] >= 0.5) == truth).mean() > 0.9


def load_votes(seed):
    sc = generate(seed=seed)
    truth = sc.truth
    vals, cids, rows, pairs = Interner(), Interner(), [], set()
    for topic, raw in sc.records:
        try:
            o = json.loads(raw)
        except ValueError:
            continue
        c, stake = o.get("contribution_id"), o.get("stake", 1_000_000)
        try:  # the worker dead-letters a malformed timestamp
            datetime.fromisoformat(str(o.get("ts")).replace("Z", "+00:00"))
        except ValueError:
            continue
        if (topic != "poa.validations" or o.get("type") != "validation" or c not in truth["contributions"]
                or o.get("validator") not in truth["validators"] or o.get("verdict") not in ("accept", "reject")
                or type(stake) is not int or (o["validator"], c) in pairs):
            continue
        pairs.add((o["validator"], c))
        rows.append((vals(o["validator"]), cids(c), o["verdict"] == "accept", stake))
    v, c, a, s = (np.array(x) for x in zip(*rows))
    good = np.array([truth["contributions"][x]["class"] == "honest" for x in cids.names])
    roles = [truth["validators"][x]["role"] for x in vals.names]
    return v, c, a.astype(np.int64), s, good, roles


@pytest.fixture(scope="module")
def seed7():
    v, c, a, s, good, roles = load_votes(7)
    ds = OnlineDawidSkene()
    ds.vote_many(v, c, a, s)
    return ds, v, c, a, s, good, roles


def test_scenario_ranks_honest_over_lazy_over_colluding(seed7):
    ds, *_, roles = seed7
    by = {r: [ds.reliability(i) for i, x in enumerate(roles) if x == r]
          for r in ("validator_honest", "validator_lazy", "validator_colluding")}
    assert min(by["validator_honest"]) > max(by["validator_lazy"]) > max(by["validator_colluding"])
    assert all(ds.fee_weight(i) == 0.0 for i, x in enumerate(roles) if x == "validator_colluding")


def test_scenario_suspects_are_the_colluders(seed7):
    ds, v, c, a, s, good, roles = seed7
    sus = ds.suspects(~good)  # spam evidence independent of the votes: here the truth
    assert {roles[x] for x, reason, _ in sus if reason == "accepts_spam"} == {"validator_colluding"}
    assert len({x for x, reason, _ in sus if reason == "accepts_spam"}) == 3
    assert all(roles[x] == "validator_colluding" for x, _, _ in sus)


@pytest.mark.filterwarnings("ignore:The (inplace|copy) keyword")
def test_scenario_online_accuracy_within_a_point_of_batch_dawid_skene(seed7):
    pd = pytest.importorskip("pandas")
    crowdkit = pytest.importorskip("crowdkit.aggregation")
    ds, v, c, a, s, good, _ = seed7
    online = float(((ds.post[:good.size] >= 0.5) == good).mean())
    lab = crowdkit.DawidSkene(n_iter=100).fit_predict(pd.DataFrame({"task": c, "worker": v, "label": a}))
    batch = float(((lab.sort_index().to_numpy() == 1) == good).mean())
    majority = float(((crowdkit.MajorityVote().fit_predict(
        pd.DataFrame({"task": c, "worker": v, "label": a})).sort_index().to_numpy() == 1) == good).mean())
    assert online >= batch - 0.01, (online, batch)
    assert online > majority + 0.1


def test_fading_prior_prevents_label_flip_on_seed_2():
    v, c, a, s, good, _ = load_votes(2)
    ds = OnlineDawidSkene()
    ds.vote_many(v, c, a, s)
    ds.sweep(20)
    assert ((ds.post[:good.size] >= 0.5) == good).mean() > 0.85
