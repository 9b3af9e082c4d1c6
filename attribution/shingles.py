"""Word n-gram shingles over token hashes (uint64 in, uint64 out).

Contract:
- ``ngram_hashes(tokens, n)``: for every window of ``n`` consecutive token hashes
  (``len - n + 1`` of them, none when ``len < n``) ``mix64(P ^ n * GOLDEN)`` where ``P``
  is the window's polynomial in an odd base mod 2**64 (rolling, O(1) per window);
  seeded by ``n``, so windows of different lengths live in different hash domains.
- ``shingles(tokens, k=5)``: the word ``k``-gram shingles used for near-duplicate
  detection. A document with ``1 <= len < k`` tokens has exactly one shingle, the hash
  of its whole token sequence (so two short documents only match when identical, which
  the exact ``content_hash`` check already catches); an empty document has none.
  Shingles are a multiset in text order; MinHash ignores repeats.
- ``shingles_batch(flat, offsets, k)``: the same for many documents stored as one flat
  token array with ``offsets`` (int64, ``len = n_docs + 1``) -> (flat shingles, offsets).
"""
from __future__ import annotations

import numba as nb
import numpy as np

from poa_stream.attribution.text import mix64

SHINGLE_K = 5
_B = np.uint64(0xD6E8FEB86659FD93)


@nb.njit(cache=True, nogil=True)
def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of ``n`` consecutive token hashes (len - n + 1 values).

    ``mix64(P ^ n * GOLDEN)`` with ``P = sum_j t_j * B**(n-1-j) mod 2**64`` the polynomial
    of the window (B odd), computed rolling: O(1) per window whatever ``n``.
    """
    m = tokens.shape[0] - n + 1
    if m <= 0 or n <= 0:
        return np.empty(0, dtype=np.uint64)
    out = np.empty(m, dtype=np.uint64)
    seed = np.uint64(n) * np.uint64(0x9E3779B97F4A7C15)
    bn1 = np.uint64(1)
    h = np.uint64(0)
    for j in range(n):
        h = h * _B + tokens[j]
        if j > 0:
            bn1 = bn1 * _B
    out[0] = mix64(h ^ seed)
    for i in range(1, m):
        h = (h - tokens[i - 1] * bn1) * _B + tokens[i + n - 1]
        out[i] = mix64(h ^ seed)
    return out


@nb.njit(cache=True, nogil=True)
def shingles(tokens: np.ndarray, k: int = SHINGLE_K) -> np.ndarray:
    """Word ``k``-gram shingle hashes; one whole-sequence shingle when ``0 < len < k``."""
    m = tokens.shape[0]
    if m == 0:
        return np.empty(0, dtype=np.uint64)
    return ngram_hashes(tokens, k if m >= k else m)


@nb.njit(cache=True, nogil=True)
def shingles_batch(flat: np.ndarray, offsets: np.ndarray, k: int = SHINGLE_K):
    """Shingles of many documents: (flat uint64, offsets int64[n_docs + 1])."""
    nd = offsets.shape[0] - 1
    out_offs = np.zeros(nd + 1, dtype=np.int64)
    for d in range(nd):
        m = offsets[d + 1] - offsets[d]
        cnt = 0 if m == 0 else (m - k + 1 if m >= k else 1)
        out_offs[d + 1] = out_offs[d] + cnt
    out = np.empty(out_offs[nd], dtype=np.uint64)
    for d in range(nd):
        out[out_offs[d]:out_offs[d + 1]] = shingles(flat[offsets[d]:offsets[d + 1]], k)
    return out, out_offs


@nb.njit(cache=True, nogil=True)
def skip_bigrams(tokens: np.ndarray, d: int) -> np.ndarray:
    """Ordered word pairs at distance 1..``d`` (``a`` before ``b``), hashed: the shingles of
    the template index (processors/handlers_contributions.py). Slot-filled copies of one
    template keep the pairs around their fixed words and in their order; texts that merely
    share a vocabulary do not. ``sum(min(d, len - 1 - i))`` values."""
    m = tokens.shape[0]
    if m < 2 or d < 1:
        return np.empty(0, dtype=np.uint64)
    n = 0
    for i in range(m - 1):
        n += min(d, m - 1 - i)
    out = np.empty(n, dtype=np.uint64)
    k = 0
    for i in range(m - 1):
        a = mix64(tokens[i] ^ np.uint64(0x5851F42D4C957F2D))
        for j in range(i + 1, min(m, i + 1 + d)):
            out[k] = mix64(a + tokens[j] * _B)
            k += 1
    return out
