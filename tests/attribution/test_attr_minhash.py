"""attribution.minhash: kernels vs py_func and brute force; accuracy vs truth and datasketch."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from poa_stream.attribution.minhash import (EMPTY, MinHasher, jaccard, sketch, sketch_batch,
                                 sketch_params, sketch_tokens_batch)
from poa_stream.attribution.shingles import shingles

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
M64, M32 = (1 << 64) - 1, (1 << 32) - 1
PERM, ROUNDS = sketch_params(16, seed=7)


def h_classic(x, i, perm):
    a = int(perm[0, i]) | int(perm[1, i]) << 32
    b = int(perm[2, i]) | int(perm[3, i]) << 32
    x32 = (x ^ (x >> 32)) & M32
    return ((a * x32 + b) & M64) >> 32


def ref_classic(sh, perm):
    P = perm.shape[1]
    return [min([h_classic(int(x), i, perm) for x in sh], default=M32) for i in range(P)]


def ref_fss(sh, perm, rounds):
    """The definition: minimum over all three rounds, classic fallback for empty slots."""
    P = perm.shape[1]
    out = [M32] * P
    for r in range(3):
        for x in map(int, sh):
            g = (x * int(rounds[0, r]) + int(rounds[1, r])) & M64
            slot = ((g >> 32) * P) >> 32
            out[slot] = min(out[slot], (r << 30) | ((g & M32) >> 2))
    for i in range(P):
        if out[i] == M32 and len(sh):
            out[i] = (3 << 30) | (min(h_classic(int(x), i, perm) for x in sh) >> 2)
    return out


shingle_sets = st.lists(st.integers(0, M64), max_size=120).map(lambda x: np.asarray(x, dtype=np.uint64))


@settings(max_examples=150, deadline=None)
@given(sh=shingle_sets)
def test_kernels_match_brute_force_and_py_func(sh):
    for fss, ref in ((True, ref_fss(sh, PERM, ROUNDS)), (False, ref_classic(sh, PERM))):
        got = sketch(sh, PERM, ROUNDS, fss)
        assert got.dtype == np.uint32 and got.tolist() == ref
        assert np.array_equal(got, sketch.py_func(sh, PERM, ROUNDS, fss))


@settings(max_examples=30, deadline=None)
@given(docs=st.lists(st.lists(st.integers(0, M64), max_size=30), max_size=5))
def test_batches_equal_single(docs):
    arrs = [np.asarray(d, dtype=np.uint64) for d in docs]
    flat = np.concatenate(arrs + [np.zeros(0, dtype=np.uint64)])
    offs = np.cumsum([0] + [len(d) for d in docs]).astype(np.int64)
    for fss in (True, False):
        b = sketch_batch(flat, offs, PERM, ROUNDS, fss)
        t = sketch_tokens_batch(flat, offs, 5, PERM, ROUNDS, fss)
        for i, d in enumerate(arrs):
            assert np.array_equal(b[i], sketch(d, PERM, ROUNDS, fss))
            assert np.array_equal(t[i], sketch(shingles(d, 5), PERM, ROUNDS, fss))


def test_empty_set_seeds_and_hasher():
    h = MinHasher()
    assert (h.signature(np.zeros(0, dtype=np.uint64)) == EMPTY).all()
    toks = np.arange(50, dtype=np.uint64)
    assert np.array_equal(h.signature(toks), MinHasher().signature(toks))
    assert not np.array_equal(h.signature(toks), MinHasher(seed=2).signature(toks))
    assert np.array_equal(h.batch_texts(["a b c d e f g"])[0], h.signature(
        np.asarray(__import__("importlib").import_module("poa_stream.attribution.text").token_hashes("a b c d e f g"))))
    with pytest.raises(ValueError):
        MinHasher(scheme="nope")
    with pytest.raises(ValueError):
        jaccard(np.zeros(3, np.uint32), np.zeros(4, np.uint32))


def pairs(rng, n_union, J, count):
    """Shingle-set pairs with |A n B| / |A u B| = J exactly."""
    out = []
    for _ in range(count):
        inter = int(round(J * n_union))
        u = rng.integers(0, M64, n_union, dtype=np.uint64)
        only = n_union - inter
        a = np.concatenate([u[:inter], u[inter:inter + only // 2]])
        b = np.concatenate([u[:inter], u[inter + only // 2:]])
        out.append((a, b, inter / n_union))
    return out


def test_estimates_agree_with_truth_and_datasketch():
    ds = pytest.importorskip("datasketch")
    rng = np.random.default_rng(3)
    errs = {"fss": [], "classic": [], "datasketch": [], "fss-ds": [], "classic-ds": []}
    for n_union in (40, 150, 1000):
        for J in (0.2, 0.5, 0.8, 0.9, 0.95):
            for a, b, true in pairs(rng, n_union, J, 8):
                se = np.sqrt(max(true * (1 - true), 0.02) / 128)
                est = {}
                for scheme in ("fss", "classic"):
                    h = MinHasher(128, seed=int(rng.integers(1 << 30)), scheme=scheme)
                    est[scheme] = jaccard(h.signature_shingles(a), h.signature_shingles(b))
                ma, mb = ds.MinHash(num_perm=128), ds.MinHash(num_perm=128)
                ma.update_batch([x.tobytes() for x in a])
                mb.update_batch([x.tobytes() for x in b])
                est["datasketch"] = ma.jaccard(mb)
                for k in ("fss", "classic", "datasketch"):
                    errs[k].append((est[k] - true) / se)
                errs["fss-ds"].append((est["fss"] - est["datasketch"]) / (np.sqrt(2) * se))
                errs["classic-ds"].append((est["classic"] - est["datasketch"]) / (np.sqrt(2) * se))
    for k, e in errs.items():
        e = np.abs(np.asarray(e))
        assert (e <= 3).mean() >= 0.95, (k, (e <= 3).mean())
        assert e.max() <= 4.5, (k, e.max())
    for k in ("fss", "classic"):  # no bias: mean error within a few SE of the mean
        assert abs(np.mean(errs[k])) < 3 / np.sqrt(len(errs[k])) + 0.15
