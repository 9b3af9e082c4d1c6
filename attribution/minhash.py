"""MinHash-family similarity sketches of shingle sets: uint64 shingles -> uint32[num_perm].

Two schemes, both seeded and deterministic, both with P[sig_a[j] == sig_b[j]] = J(A, B)
(the Jaccard similarity of the two shingle sets) for every slot j, so the estimate
``jaccard(sig_a, sig_b) = mean(sig_a == sig_b)`` is unbiased with standard error about
sqrt(J (1 - J) / num_perm). Signatures of different schemes or seeds never compare.

- ``"classic"``: num_perm independent hash functions, the multiply-add-shift family
  (Dietzfelbinger 1996, strongly universal from 32 to 32 bits):
  ``h_i(x) = ((a_i * x32 + b_i) mod 2**64) >> 32`` with ``x32`` the shingle hash folded to
  32 bits and ``a_i`` (odd), ``b_i`` 64-bit from a splitmix64 stream of ``seed``;
  ``sig[i] = min over shingles of h_i``. O(n * num_perm), the textbook MinHash (the same
  family rensa uses for its fallback slots).
- ``"fss"`` (default): Fast Similarity Sketching (Dahlgaard, Knudsen, Thorup, FOCS 2017),
  O(n + num_perm) for sets of more than ~2 * num_perm shingles. In round r = 0, 1, 2
  every shingle x draws one 64-bit hash ``g = x * A_r + B_r mod 2**64`` (A_r odd; one
  multiply is enough because shingle hashes are already the output of a strong 64-bit
  mixer); it picks slot ``(g >> 32) * num_perm >> 32`` and value
  ``r << 30 | (g & 0xffffffff) >> 2``; ``sig[j]`` is the minimum value that reached slot j.
  Slots still empty after round 2 (common only for sets under ~2 * num_perm shingles)
  get ``3 << 30 | h_j(x) >> 2`` from the classic family. A round only runs while some
  slot is empty: values of round r + 1 are larger than every value of round r, so
  stopping early gives exactly the sketch of all rounds. Each slot's value is the
  minimum over exchangeable per-shingle draws, so it is attained by a uniformly random
  shingle of A u B, which gives the same per-slot collision probability J.
- An empty set has the all-0xffffffff signature (callers treat empty sets apart).
"""
from __future__ import annotations

import numba as nb
import numpy as np

from poa_stream.attribution.shingles import SHINGLE_K, shingles

NUM_PERM = 128
EMPTY = np.uint32(0xFFFFFFFF)
SCHEMES = ("fss", "classic")
_FSS_ROUNDS = 3


def splitmix_stream(seed: int, n: int) -> np.ndarray:
    """``n`` outputs of the splitmix64 generator started at ``seed`` (uint64)."""
    out = np.empty(n, dtype=np.uint64)
    s = seed & 0xFFFFFFFFFFFFFFFF
    for i in range(n):
        s = (s + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        out[i] = z ^ (z >> 31)
    return out


def sketch_params(num_perm: int = NUM_PERM, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(perm uint32[4, num_perm], rounds uint64[2, 3]) for ``seed``.

    ``perm`` rows are a_lo, a_hi, b_lo, b_hi: the 32-bit halves of the classic family's
    a_i (odd) and b_i; ``rounds`` rows are the FSS round multipliers (odd) and addends.
    All come from one splitmix64 stream of ``seed``.
    """
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    s = splitmix_stream(seed, 2 * num_perm + 2 * _FSS_ROUNDS)
    a = s[0:2 * num_perm:2] | np.uint64(1)
    b = s[1:2 * num_perm:2]
    m32 = np.uint64(0xFFFFFFFF)
    perm = np.empty((4, num_perm), dtype=np.uint32)
    perm[0], perm[1] = a & m32, a >> np.uint64(32)
    perm[2], perm[3] = b & m32, b >> np.uint64(32)
    rounds = s[2 * num_perm:].reshape(_FSS_ROUNDS, 2).T.copy()
    rounds[0] |= np.uint64(1)
    return perm, rounds


@nb.njit(cache=True, nogil=True, inline="always")
def _perm(al, bl, ah, bh, x32):
    """high 32 bits of (a * x32 + b) mod 2**64, a = ah:al, b = bh:bl (uint32 halves)."""
    t = np.uint32((np.uint64(al) * x32 + np.uint64(bl)) >> np.uint64(32))
    return np.uint32(t + np.uint32(np.uint32(ah) * np.uint32(x32)) + bh)


@nb.njit(cache=True, nogil=True)
def _fold32(sh: np.ndarray) -> np.ndarray:
    """Shingle hashes folded to 32 bits, padded with 3 copies of the first (min-neutral)."""
    n = sh.shape[0]
    xs = np.empty(n + 3, dtype=np.uint64)
    for j in range(n):
        x = sh[j]
        xs[j] = (x ^ (x >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    for j in range(n, n + 3):
        xs[j] = xs[0] if n > 0 else np.uint64(0)
    return xs


@nb.njit(cache=True, nogil=True)
def _classic_slot(xs: np.ndarray, n: int, p: np.ndarray, i: int) -> np.uint32:
    """min over the n folded shingles of h_i."""
    al, ah, bl, bh = p[0, i], p[1, i], p[2, i], p[3, i]
    m = np.uint32(0xFFFFFFFF)
    for j in range(0, n, 4):
        v = min(min(_perm(al, bl, ah, bh, xs[j]), _perm(al, bl, ah, bh, xs[j + 1])),
                min(_perm(al, bl, ah, bh, xs[j + 2]), _perm(al, bl, ah, bh, xs[j + 3])))
        m = min(m, v)
    return m


@nb.njit(cache=True, nogil=True)
def sketch_classic_into(sh: np.ndarray, p: np.ndarray, out: np.ndarray) -> None:
    """Classic MinHash: out[i] = min(out[i], min_x h_i(x)); shingle-major, SIMD over slots."""
    n = sh.shape[0]
    if n == 0:
        return
    xs = _fold32(sh)
    P = out.shape[0]
    for j in range(0, n, 4):
        x0, x1, x2, x3 = xs[j], xs[j + 1], xs[j + 2], xs[j + 3]
        for i in range(P):
            al, ah, bl, bh = p[0, i], p[1, i], p[2, i], p[3, i]
            v = min(min(_perm(al, bl, ah, bh, x0), _perm(al, bl, ah, bh, x1)),
                    min(_perm(al, bl, ah, bh, x2), _perm(al, bl, ah, bh, x3)))
            out[i] = min(out[i], v)


@nb.njit(cache=True, nogil=True)
def sketch_fss_into(sh: np.ndarray, perm: np.ndarray, rounds: np.ndarray,
                    out: np.ndarray) -> None:
    """Fast Similarity Sketch of shingles ``sh`` into ``out`` (prefilled with EMPTY)."""
    n = sh.shape[0]
    P = out.shape[0]
    if n == 0:
        return
    for r in range(3):
        a = rounds[0, r]
        b = rounds[1, r]
        band = np.uint32(r << 30)
        for j in range(n):
            g = sh[j] * a + b
            slot = ((g >> np.uint64(32)) * np.uint64(P)) >> np.uint64(32)
            v = band | np.uint32((g & np.uint64(0xFFFFFFFF)) >> np.uint64(2))
            out[slot] = min(out[slot], v)
        empty = 0
        for i in range(P):
            empty += out[i] == np.uint32(0xFFFFFFFF)
        if empty == 0:
            return
    xs = _fold32(sh)
    for i in range(P):
        if out[i] == np.uint32(0xFFFFFFFF):
            out[i] = np.uint32(0xC0000000) | (_classic_slot(xs, n, perm, i) >> np.uint32(2))


@nb.njit(cache=True, nogil=True)
def _sketch_into(sh: np.ndarray, perm: np.ndarray, rounds: np.ndarray, fss: bool,
                 out: np.ndarray) -> None:
    if fss:
        sketch_fss_into(sh, perm, rounds, out)
    else:
        sketch_classic_into(sh, perm, out)


@nb.njit(cache=True, nogil=True)
def sketch(sh: np.ndarray, perm: np.ndarray, rounds: np.ndarray, fss: bool) -> np.ndarray:
    """Signature (uint32[num_perm]) of one shingle array."""
    out = np.full(perm.shape[1], np.uint32(0xFFFFFFFF), dtype=np.uint32)
    _sketch_into(sh, perm, rounds, fss, out)
    return out


@nb.njit(cache=True, nogil=True)
def sketch_batch(flat: np.ndarray, offsets: np.ndarray, perm: np.ndarray, rounds: np.ndarray,
                 fss: bool) -> np.ndarray:
    """Signatures of many shingle arrays (flat + offsets) -> uint32[n_docs, num_perm]."""
    nd = offsets.shape[0] - 1
    out = np.full((nd, perm.shape[1]), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    for d in range(nd):
        _sketch_into(flat[offsets[d]:offsets[d + 1]], perm, rounds, fss, out[d])
    return out


@nb.njit(cache=True, nogil=True)
def sketch_tokens_batch(flat: np.ndarray, offsets: np.ndarray, k: int, perm: np.ndarray,
                        rounds: np.ndarray, fss: bool) -> np.ndarray:
    """Signatures of the ``k``-shingles of many token arrays -> uint32[n_docs, num_perm]."""
    nd = offsets.shape[0] - 1
    out = np.full((nd, perm.shape[1]), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    for d in range(nd):
        _sketch_into(shingles(flat[offsets[d]:offsets[d + 1]], k), perm, rounds, fss, out[d])
    return out


def jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Estimated Jaccard similarity: the fraction of equal slots."""
    if sig_a.shape != sig_b.shape:
        raise ValueError(f"signatures differ in length ({sig_a.shape} vs {sig_b.shape}); "
                         "compare signatures made with the same num_perm")
    return float(np.count_nonzero(sig_a == sig_b)) / sig_a.shape[0]


class MinHasher:
    """Seeded sketcher: ``MinHasher(num_perm=128, seed=1, scheme="fss", k=5)``.

    ``signature(tokens)`` -> uint32[num_perm] of the token array's ``k``-shingles;
    ``signature_shingles(sh)`` of ready shingles; ``batch_tokens(flat, offsets)`` and
    ``batch_texts(texts)`` -> uint32[n, num_perm].
    """

    def __init__(self, num_perm: int = NUM_PERM, seed: int = 1, scheme: str = "fss",
                 k: int = SHINGLE_K):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        if k < 1:
            raise ValueError("k (shingle length in words) must be >= 1")
        self.num_perm, self.seed, self.scheme, self.k = num_perm, seed, scheme, k
        self.perm, self.rounds = sketch_params(num_perm, seed)
        self._fss = scheme == "fss"

    def signature_shingles(self, sh: np.ndarray) -> np.ndarray:
        return sketch(np.ascontiguousarray(sh, dtype=np.uint64), self.perm, self.rounds, self._fss)

    def signature(self, tokens: np.ndarray) -> np.ndarray:
        return self.signature_shingles(shingles(np.ascontiguousarray(tokens, dtype=np.uint64),
                                                self.k))

    def batch_tokens(self, flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return sketch_tokens_batch(np.ascontiguousarray(flat, dtype=np.uint64),
                                   np.ascontiguousarray(offsets, dtype=np.int64),
                                   self.k, self.perm, self.rounds, self._fss)

    def batch_texts(self, texts: list[str]) -> np.ndarray:
        from poa_stream.attribution.text import token_hashes_batch
        return self.batch_tokens(*token_hashes_batch(texts))
