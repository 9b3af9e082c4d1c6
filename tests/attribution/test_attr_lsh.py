"""attribution.lsh: LSH parameters, banded index vs brute force, near-duplicate quality."""
import numpy as np
import pytest

from poa_stream.attribution.lsh import LSHIndex, NearDupIndex, band_keys, optimal_params
from poa_stream.attribution.shingles import shingles

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def test_optimal_params_match_datasketch_and_favour_recall():
    ds_lsh = pytest.importorskip("datasketch.lsh")
    for t in (0.5, 0.7, 0.8, 0.9):
        for p in (64, 128):
            assert optimal_params(t, p, 0.5, 0.5) == ds_lsh._optimal_param(t, p, 0.5, 0.5)
    b, r = optimal_params(0.8, 128)
    assert (b, r) == (16, 8) and 1 - (1 - 0.8 ** r) ** b > 0.9


@pytest.mark.parametrize("alphabet,bands,rows", [(2, 4, 3), (300, 12, 1)])
def test_index_matches_brute_force_band_sharing(alphabet, bands, rows):
    rng = np.random.default_rng(0)  # tiny alphabet: many collisions; big one: table growth
    lsh = LSHIndex(num_perm=12, bands=bands, rows=rows, seed=5)
    sigs = rng.integers(0, alphabet, (300, 12)).astype(np.uint32)
    ids = rng.permutation(1000)[:300]
    for i, s in zip(ids, sigs):
        lsh.insert(int(i), s)
    for q in np.concatenate([rng.integers(0, alphabet, (40, 12)), sigs[:5]]).astype(np.uint32):
        share = [(q[:bands * rows].reshape(bands, rows) == s[:bands * rows].reshape(bands, rows))
                 .all(axis=1).any() for s in sigs]
        assert lsh.query(q).tolist() == sorted(ids[np.asarray(share)].tolist())
    assert np.array_equal(band_keys(sigs[0], bands, rows, lsh.seed),
                          band_keys.py_func(sigs[0], bands, rows, lsh.seed))
    assert np.array_equal(lsh.signature_of(int(ids[7])), sigs[7])
    with pytest.raises(ValueError):
        lsh.insert(int(ids[0]), sigs[0])
    with pytest.raises(KeyError):
        lsh.signature_of(5000)


def mutate(rng, toks, n_sub, vocab):
    t = toks.copy()
    t[rng.choice(len(t), n_sub, replace=False)] = rng.integers(vocab, 2 * vocab, n_sub, dtype=np.uint64)
    return t


def true_jaccard(a, b):
    sa, sb = set(shingles(a).tolist()), set(shingles(b).tolist())
    return len(sa & sb) / len(sa | sb)


@pytest.mark.parametrize("scheme", ["fss", "classic"])
def test_recall_and_false_positives_on_generated_corpus(scheme):
    rng = np.random.default_rng(42)
    vocab, n_base = 20_000, 400
    nd = NearDupIndex(128, 0.8, seed=3, scheme=scheme)
    bases = [rng.integers(0, vocab, int(rng.integers(80, 400)), dtype=np.uint64) for _ in range(n_base)]
    for i, b in enumerate(bases):
        assert nd.check_and_add(i, shingles(b))[0] == -1
    hi_found, hi_n, lo_fp, lo_n = 0, 0, 0, 0
    for i, b in enumerate(bases):
        frac = [0.002, 0.005, 0.01, 0.02, 0.08, 0.12, 0.2, 0.3][i % 8]
        v = mutate(rng, b, max(1, int(frac * len(b))), vocab)
        J = true_jaccard(b, v)
        match, est = nd.check_and_add(n_base + i, shingles(v))
        if J >= 0.9:
            hi_n += 1
            hi_found += match == i
        elif J <= 0.5:
            lo_n += 1
            lo_fp += match != -1
    assert hi_n >= 100 and lo_n >= 50
    assert hi_found / hi_n >= 0.95
    assert lo_fp / lo_n <= 0.01


def test_check_and_add_semantics():
    rng = np.random.default_rng(1)
    nd = NearDupIndex()
    a = rng.integers(0, 2**63, 400, dtype=np.uint64)
    b = a.copy(); b[100] = 1          # near a
    c = b.copy(); c[[200, 201, 300, 350, 20, 40, 60]] = 2  # near b, farther from a
    assert nd.check_and_add(10, shingles(a)) == (-1, 0.0)
    m, est = nd.check_and_add(11, shingles(b))
    assert m == 10 and 0.9 <= est <= 1.0
    m, est = nd.check_and_add(12, shingles(c))
    assert m in (10, 11) and nd.root_of(12) == 10 and nd.root_of(11) == 10
    assert nd.check_and_add(13, np.zeros(0, dtype=np.uint64)) == (-1, 0.0)
    assert len(nd) == 3
    assert np.array_equal(nd.signature_of(10), nd.signature(shingles(a)))
    # a later copy matches the earliest document, not the latest
    assert nd.check_and_add(14, shingles(a))[0] == 10
