"""attribution.spans: maximal matches and weights vs brute force; memory per token."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from poa_stream.attribution import span_kernels as K
from poa_stream.attribution.spans import NgramIndex, SpanIndex, allowed_mask_from

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def brute_spans(docs, q, n, allowed):
    """Every (s, L, d): q[s:s+L] == doc[p:p+L], not extendable left or right, L >= n."""
    out = set()
    for d, t in docs:
        if d >= len(allowed) or not allowed[d]:
            continue
        for s in range(len(q)):
            for p in range(len(t)):
                if q[s] != t[p] or (s > 0 and p > 0 and q[s - 1] == t[p - 1]):
                    continue
                L = 0
                while s + L < len(q) and p + L < len(t) and q[s + L] == t[p + L]:
                    L += 1
                if L >= n:
                    out.add((s, L, d))
    return sorted(out, key=lambda x: (x[0], x[2], x[1]))


def brute_weights(spans, m, n_docs):
    cover = {}
    for s, L, d in spans:
        cover.setdefault(d, set()).update(range(s, s + L))
    k = [sum(t in c for c in cover.values()) for t in range(m)]
    credit = {d: sum(math.log1p(n_docs / k[t]) / k[t] for t in c) for d, c in cover.items()}
    total = sum(credit.values())
    docs = sorted(credit)
    return docs, [credit[d] / total for d in docs], sum(x > 0 for x in k)


seq = lambda v, hi: st.lists(st.integers(0, v), max_size=hi).map(lambda x: np.asarray(x, dtype=np.uint64))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=st.integers(1, 5), v=st.integers(1, 5), mem_min=st.integers(1, 60))
def test_find_spans_and_attribute_match_brute_force(data, n, v, mem_min):
    idx = SpanIndex(n, mem_min=mem_min)
    docs = []
    for _ in range(data.draw(st.integers(0, 8))):
        d, t = data.draw(st.integers(0, 9)), data.draw(seq(v, 25))
        docs.append((d, t))
        idx.add(d, t)
    q = data.draw(seq(v + 1, 30))  # v + 1 is never indexed when v is the max id drawn
    allowed = np.asarray(data.draw(st.lists(st.booleans(), max_size=12)), dtype=np.bool_)
    s, L, d = idx.find_spans(q, allowed)
    exp = brute_spans(docs, q.tolist(), n, allowed)
    assert list(zip(s.tolist(), L.tolist(), d.tolist())) == exp
    docs_w, w, matched = idx.attribute(q, allowed)
    e_docs, e_w, e_matched = brute_weights(exp, len(q), idx.n_docs)
    assert docs_w.tolist() == e_docs and matched == e_matched
    assert np.allclose(w, e_w)
    if exp:
        assert abs(w.sum() - 1.0) < 1e-12 and (w > 0).all()
        assert all(x < len(allowed) and allowed[x] for x in docs_w)  # nothing outside allowed


def test_kernels_match_py_func():
    rng = np.random.default_rng(0)
    idx = SpanIndex(3, mem_min=50)
    for d in range(20):
        idx.add(d, rng.integers(0, 4, 30).astype(np.uint64))
    q = rng.integers(0, 4, 40).astype(np.uint64)
    qi = K.vocab_ids(idx._vkeys, idx._vvals, q)
    args = (qi, 3, idx._corpus, idx._bstart, idx._bpos, idx._bfp, idx._bbits, idx._mhead,
            idx._mnext, idx._mfp, idx._mbits, idx._main_end, idx._doc_start, idx.n_docs,
            idx._doc_ids, np.ones(20, dtype=np.bool_), 1 << 62, 1 << 62)
    a, b = K.find_spans(*args), K.find_spans.py_func(*args)
    assert a[0].shape[0] > 0 and all(np.array_equal(x, y) for x, y in zip(a, b))
    a = K.build_main(idx._corpus, idx._len, 3, 5)
    b = K.build_main.py_func(idx._corpus, idx._len, 3, 5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    args = (40, a[0][:0].astype(np.int64), a[0][:0].astype(np.int64), a[0][:0].astype(np.int64), 20.0)
    assert K.attribute_matches(*args)[0].shape == (0,)


def test_rare_spans_weigh_more_and_shim():
    common = np.arange(100, 110, dtype=np.uint64)
    rare = np.arange(200, 210, dtype=np.uint64)
    idx = NgramIndex(8)
    idx.add(0, np.concatenate([common, rare]))
    for d in range(1, 6):
        idx.add(d, np.concatenate([common, np.full(3, 999 + d, dtype=np.uint64)]))
    q = np.concatenate([common, np.asarray([7], dtype=np.uint64), rare])
    docs, w, matched = idx.attribute(q, set(range(6)))
    assert docs == list(range(6)) and matched == 20 and abs(w.sum() - 1) < 1e-12
    assert w[0] > 0.5 and np.allclose(w[1:], w[1])  # unique span dominates, shared span split
    e_docs, e_w, e_matched = idx.attribute(q, set())
    assert e_docs == [] and len(e_w) == 0 and e_matched == 0
    assert idx.attribute(q, {3})[0] == [3]


def test_allowed_mask_from():
    assert allowed_mask_from([1, 3]).tolist() == [False, True, False, True]
    assert allowed_mask_from(set(), 2).tolist() == [False, False]
    assert allowed_mask_from(np.asarray([0]), 3).tolist() == [True, False, False]


def test_memory_per_token_stays_under_16_bytes():
    rng = np.random.default_rng(5)
    V = 30_000
    p = 1.0 / np.arange(1, V + 1) ** 1.05
    words = rng.integers(0, 2**63, V, dtype=np.uint64)
    toks = words[np.minimum(np.searchsorted(np.cumsum(p / p.sum()), rng.random(1_200_000)), V - 1)]
    idx = SpanIndex(8)
    worst = 0.0
    for d in range(2400):
        idx.add(d, toks[d * 500:(d + 1) * 500])
        if idx.n_tokens >= 400_000:
            worst = max(worst, idx.bytes_per_token())
    assert worst <= 16.0, worst
    s, L, dd = idx.find_spans(toks[1000:1500], np.ones(2400, dtype=np.bool_))
    assert (2, 500) in zip(dd.tolist(), L.tolist())
