"""attribution.clusters: union-find vs brute-force components; the farm rule; scenario farms."""
import json
from datetime import datetime

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from poa_stream.attribution.clusters import FarmClusters, dense_windows, find, union, walk
from poa_stream.attribution.velocity import Interner
from poa_stream.scenario import DUP_J, generate, jaccard, shingles, words

edges = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 5), st.integers(0, 5)), max_size=40)


def components(n, pairs):
    adj = {i: set() for i in range(n)}
    for a, b in pairs:
        adj[a].add(b), adj[b].add(a)
    comp, seen = {}, set()
    for s in range(n):
        if s in seen:
            continue
        stack, members = [s], set()
        while stack:
            x = stack.pop()
            if x not in members:
                members.add(x)
                stack.extend(adj[x] - members)
        seen |= members
        for x in members:
            comp[x] = frozenset(members)
    return comp


@settings(max_examples=150, deadline=None)
@given(es=edges)
def test_union_find_matches_brute_force_components(es):
    fc = FarmClusters(capacity=4)
    kept = []
    for a, b, x, y in es:
        root = fc.add_edge(a, b, x, y)
        if x == y:
            assert root == -1  # same-account edges are ignored
        else:
            kept.append((a, b))
    comp = components(31, kept)
    for i in range(31):
        assert set(fc.members(i).tolist()) == comp[i]
        assert fc.cluster_of(i) == fc.cluster_of(min(comp[i]))
    assert fc.edges == len(kept)


@settings(max_examples=100, deadline=None)
@given(es=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15)), max_size=30))
def test_kernels_match_py_func(es):
    states = [(np.arange(16), np.ones(16, np.int64), np.arange(16)) for _ in range(2)]
    for a, b in es:
        r1 = union(*states[0], a, b)
        r2 = union.py_func(*states[1], a, b)
        assert r1 == r2
    for x in range(16):
        assert find(states[0][0], x) == find.py_func(states[1][0], x)
        r = find(states[0][0], x)
        assert np.array_equal(walk(states[0][2], r, states[0][1][r]), walk.py_func(states[1][2], r, states[1][1][r]))


def ref_dense(ts, codes, burst_s, k):
    n, mask, best = len(ts), np.zeros(len(ts), bool), 0
    for i in range(n):
        for j in range(i, n):
            if ts[j] - ts[i] <= burst_s:
                d = len(set(codes[i:j + 1].tolist()))
                best = max(best, d)
                if d >= k:
                    mask[i:j + 1] = True
    return mask, best


@settings(max_examples=150, deadline=None)
@given(pts=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 4)), max_size=25), burst=st.integers(0, 40),
       k=st.integers(1, 4))
def test_dense_windows_brute_force(pts, burst, k):
    pts = sorted(pts)
    ts = np.array([p[0] for p in pts], dtype=np.float64)
    codes = np.array([p[1] for p in pts], dtype=np.int64)
    mask, best = dense_windows(ts, codes, 5, float(burst), k)
    rmask, rbest = ref_dense(ts, codes, burst, k)
    assert best == rbest and np.array_equal(mask, rmask)
    pm, pb = dense_windows.py_func(ts, codes, 5, float(burst), k)
    assert pb == best and np.array_equal(pm, mask)


def test_farm_rule_needs_accounts_in_one_burst():
    fc = FarmClusters(min_accounts=4, burst_s=600)
    for k in range(1, 5):  # an honest original (0, account 0) copied by 4 accounts, days apart
        fc.add_edge(0, k, 0, k, 0.0, k * 86_400.0)
    assert len(fc.accounts_in_cluster(0)) == 5
    assert not fc.is_farm(0) and fc.is_farm(0, burst_s=None)
    assert fc.farm_members(0).size == 0
    fc.add_edge(10, 11, 10, 11, 5e5, 5e5 + 10)  # accounts post the same text within a minute
    fc.add_edge(10, 12, 10, 12, 5e5, 5e5 + 20)
    fc.add_edge(12, 12, 12, 12)  # same account: ignored
    assert not fc.is_farm(10) and len(fc.accounts_in_cluster(10)) == 3
    fc.add_edge(11, 13, 11, 13, 5e5 + 10, 5e5 + 50)
    assert fc.is_farm(13) and fc.farm_members(12).tolist() == [10, 11, 12, 13]
    fc.add_edge(4, 13, 4, 13, 4 * 86_400.0, 5e5 + 50)  # the farm text also matches a late copy
    assert fc.is_farm(0) and fc.farm_members(0).tolist() == [10, 11, 12, 13]
    assert fc.cluster_of(10_000) == 10_000 and fc.members(10_000).tolist() == [10_000]
    for bad in (dict(min_accounts=1), dict(burst_s=-1.0)):
        with pytest.raises(ValueError):
            FarmClusters(**bad)
    with pytest.raises(ValueError, match="burst_s"):
        fc.is_farm(10, burst_s=float("nan"))


@pytest.fixture(scope="module")
def scenario_edges():
    """Contributions in production order; an edge from each one to every earlier contribution
    with true word-5-gram Jaccard >= 0.8 (or the same words), computed by brute force."""
    sc = generate(seed=7)
    truth = sc.truth["contributions"]
    docs, seen = [], set()
    for topic, raw in sc.records:
        try:
            o = json.loads(raw)
        except ValueError:
            continue
        if topic == "poa.contributions" and o.get("contribution_id") in truth and o["contribution_id"] not in seen:
            seen.add(o["contribution_id"])
            ts = datetime.fromisoformat(o["ts"].replace("Z", "+00:00")).timestamp()
            docs.append((o["contribution_id"], o["contributor"], ts, shingles(o["content"]), words(o["content"])))
    pairs = [(j, i) for i in range(len(docs)) for j in range(i)
             if docs[i][4] == docs[j][4] or jaccard(docs[i][3], docs[j][3]) >= DUP_J]
    return sc.truth, docs, pairs


def test_scenario_brute_force_edges_agree_with_truth(scenario_edges):
    truth, docs, pairs = scenario_edges
    first = {}
    for j, i in pairs:
        first.setdefault(i, j)
    for i, (cid, *_rest) in enumerate(docs):
        want = truth["contributions"][cid]["duplicate_of"]
        assert (docs[first[i]][0] if i in first else None) == want


def test_scenario_farm_recall(scenario_edges):
    truth, docs, pairs = scenario_edges
    accts, fc = Interner(), FarmClusters()
    for j, i in pairs:
        fc.add_edge(j, i, accts(docs[j][1]), accts(docs[i][1]), docs[j][2], docs[i][2])
    roles = truth["accounts"]
    flagged = {int(m) for r in {fc.cluster_of(i) for i in range(len(docs))} for m in fc.farm_members(r)}
    cls = [truth["contributions"][d[0]]["class"] for d in docs]
    farm_ids = {i for i, c in enumerate(cls) if c == "farm"}
    assert flagged == farm_ids  # every farm upload, nothing else
    farm_accounts = {docs[i][1] for i in flagged}
    assert farm_accounts == {a for a, r in roles.items() if r == "farm"}
    roots = {fc.cluster_of(i) for i in farm_ids}
    assert len(roots) == 2 and all(len(fc.accounts_in_cluster(r)) == 12 for r in roots)
