"""attribution.shingles: word n-gram hashes vs a brute-force reference."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from poa_stream.attribution.shingles import ngram_hashes, shingles, shingles_batch
from poa_stream.attribution.text import mix64

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

M = (1 << 64) - 1
B = 0xD6E8FEB86659FD93


def ref_ngrams(t, n):
    out = []
    for i in range(len(t) - n + 1):
        p = 0
        for j in range(n):
            p = (p * B + int(t[i + j])) & M
        out.append(int(mix64(np.uint64(p ^ ((n * 0x9E3779B97F4A7C15) & M)))))
    return np.asarray(out, dtype=np.uint64)


toks = st.lists(st.integers(0, 2**64 - 1), max_size=40).map(lambda x: np.asarray(x, dtype=np.uint64))


@settings(max_examples=200, deadline=None)
@given(t=toks, n=st.integers(1, 9))
def test_ngram_hashes_reference_and_py_func(t, n):
    got = ngram_hashes(t, n)
    assert np.array_equal(got, ref_ngrams(t, n))
    assert np.array_equal(got, ngram_hashes.py_func(t, n))


def test_short_documents_have_one_whole_sequence_shingle():
    t = np.asarray([1, 2, 3], dtype=np.uint64)
    assert np.array_equal(shingles(t, 5), ngram_hashes(t, 3))
    assert shingles(np.zeros(0, dtype=np.uint64), 5).shape == (0,)
    assert shingles(np.arange(7, dtype=np.uint64), 5).shape == (3,)
    # same tokens, different lengths: different hash domains
    assert ngram_hashes(t[:1], 1)[0] != shingles(np.asarray([1, 2, 3, 4, 5], dtype=np.uint64))[0]


@settings(max_examples=50, deadline=None)
@given(docs=st.lists(toks, max_size=6), k=st.integers(1, 6))
def test_batch_equals_single(docs, k):
    flat = np.concatenate(docs + [np.zeros(0, dtype=np.uint64)])
    offs = np.cumsum([0] + [len(d) for d in docs]).astype(np.int64)
    sh, so = shingles_batch(flat, offs, k)
    for i, d in enumerate(docs):
        assert np.array_equal(sh[so[i]:so[i + 1]], shingles(d, k))
