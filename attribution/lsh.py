"""Incremental LSH (banding) over MinHash signatures, state in growable numpy arrays.

Contract:
- ``optimal_params(threshold, num_perm, fp_weight, fn_weight) -> (bands, rows)``: the
  (b, r) with b * r <= num_perm minimising ``fp_weight * FP + fn_weight * FN``, FP / FN
  the integrals of the candidate probability ``1 - (1 - s**r)**b`` below / of its
  complement above ``threshold`` (datasketch's ``_optimal_param``, integrated with the
  trapezoid rule on 2,001 points instead of scipy). Candidates are verified afterwards,
  so the defaults weigh misses 19x more than false candidates: for threshold 0.8 and
  128 slots that gives b = 16, r = 8 (candidate probability 0.95 at J = 0.8, 0.9999 at
  J = 0.9, 0.06 at J = 0.5), where datasketch's 0.5/0.5 gives b = 9, r = 13 (0.40 at 0.8).
- ``LSHIndex(num_perm=128, threshold=0.8, seed=1)``: ``insert(doc_id, sig)`` (doc ids
  are non-negative ints below 2**31, each inserted once), ``query(sig)`` -> int64 ids of
  every inserted document sharing at least one band with ``sig`` (sorted, unique),
  ``jaccard(a, b)``, ``signature_of(doc_id)``. Band j's key is a 64-bit hash of its
  ``rows`` slots and j (``seed`` seeds it); keys live in one open-addressing table
  (uint64 keys, int64 chain heads, load <= 1/2, doubled when full) whose chains link
  entries ``e = row * bands + j`` through one int64 array.
- ``NearDupIndex(num_perm=128, threshold=0.8, seed=1, scheme="fss")``:
  ``check_and_add(doc_id, shingles) -> (match, jaccard)``: ``match`` is the smallest doc id
  among the indexed documents whose estimated Jaccard with this one is >= threshold
  (-1 when none; ``jaccard`` is then the best estimate seen among candidates, else 0.0);
  the document is indexed either way, so later near-copies of a near-copy are found.
  ``root_of(doc_id)`` is the earliest member of its family (a document that matched
  inherits its match's root). A document with no shingles (no words) is never indexed
  and returns (-1, 0.0).
"""
from __future__ import annotations

from functools import lru_cache

import numba as nb
import numpy as np

from poa_stream.attribution.minhash import NUM_PERM, MinHasher, jaccard as _jaccard
from poa_stream.attribution.text import mix64

MAX_DOC_ID = (1 << 31) - 1


@lru_cache(maxsize=64)
def optimal_params(threshold: float, num_perm: int, fp_weight: float = 0.05,
                   fn_weight: float = 0.95) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive / negative areas."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    best, opt = float("inf"), (1, num_perm)
    lo = np.linspace(0.0, threshold, 2001)
    hi = np.linspace(threshold, 1.0, 2001)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1.0 - (1.0 - lo ** r) ** b, lo)
            fn = np.trapezoid((1.0 - hi ** r) ** b, hi)
            err = fp * fp_weight + fn * fn_weight
            if err < best:
                best, opt = err, (b, r)
    return opt


@nb.njit(cache=True, nogil=True)
def band_keys(sig: np.ndarray, bands: int, rows: int, seed: np.uint64) -> np.ndarray:
    """64-bit key of each band: chained mix of its ``rows`` slots, seeded by band index."""
    out = np.empty(bands, dtype=np.uint64)
    for j in range(bands):
        h = mix64(seed ^ np.uint64(j + 1))
        for i in range(j * rows, (j + 1) * rows):
            h = mix64(h ^ np.uint64(sig[i]))
        out[j] = h
    return out


@nb.njit(cache=True, nogil=True)
def table_insert(tkeys, thead, enext, keys, row) -> int:
    """Link entries row * bands + j under their keys; returns the number of new keys."""
    bands = keys.shape[0]
    mask = np.uint64(tkeys.shape[0] - 1)
    new = 0
    for j in range(bands):
        k = keys[j]
        s = np.int64(mix64(k) & mask)
        while thead[s] >= 0 and tkeys[s] != k:
            s = np.int64((np.uint64(s) + np.uint64(1)) & mask)
        if thead[s] < 0:
            tkeys[s] = k
            new += 1
        e = row * bands + j
        enext[e] = thead[s]
        thead[s] = e
    return new


@nb.njit(cache=True, nogil=True)
def table_query(tkeys, thead, enext, keys) -> np.ndarray:
    """Rows sharing at least one band key with ``keys`` (sorted, unique)."""
    bands = keys.shape[0]
    mask = np.uint64(tkeys.shape[0] - 1)
    buf = np.empty(16, dtype=np.int64)
    n = 0
    for j in range(bands):
        k = keys[j]
        s = np.int64(mix64(k) & mask)
        while thead[s] >= 0 and tkeys[s] != k:
            s = np.int64((np.uint64(s) + np.uint64(1)) & mask)
        e = thead[s]
        while e >= 0:
            if e % bands == j:
                if n == buf.shape[0]:
                    nb_ = np.empty(2 * n, dtype=np.int64)
                    nb_[:n] = buf
                    buf = nb_
                buf[n] = e // bands
                n += 1
            e = enext[e]
    return np.unique(buf[:n])


@nb.njit(cache=True, nogil=True)
def table_rehash(tkeys, thead, cap):
    """The same key -> chain head table in ``cap`` (a power of two) slots."""
    nk = np.zeros(cap, dtype=np.uint64)
    nh = np.full(cap, -1, dtype=np.int64)
    mask = np.uint64(cap - 1)
    for s0 in range(tkeys.shape[0]):
        if thead[s0] >= 0:
            k = tkeys[s0]
            s = np.int64(mix64(k) & mask)
            while nh[s] >= 0:
                s = np.int64((np.uint64(s) + np.uint64(1)) & mask)
            nk[s] = k
            nh[s] = thead[s0]
    return nk, nh


def _grow(a: np.ndarray, n: int, fill=0) -> np.ndarray:
    """``a`` with room for at least ``n`` rows (capacity doubles), new rows = fill."""
    if n <= a.shape[0]:
        return a
    cap = max(n, 2 * a.shape[0], 16)
    out = np.full((cap,) + a.shape[1:], fill, dtype=a.dtype)
    out[:a.shape[0]] = a
    return out


class LSHIndex:
    """Incremental banded LSH index of uint32 signatures (see module docstring)."""

    def __init__(self, num_perm: int = NUM_PERM, threshold: float = 0.8, seed: int = 1,
                 bands: int | None = None, rows: int | None = None):
        if (bands is None) != (rows is None):
            raise ValueError("give both bands and rows, or neither")
        if bands is None:
            bands, rows = optimal_params(threshold, num_perm)
        if bands * rows > num_perm:
            raise ValueError(f"bands * rows = {bands * rows} exceeds num_perm = {num_perm}")
        self.num_perm, self.threshold, self.bands, self.rows = num_perm, threshold, bands, rows
        self.seed = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        self.n = 0
        self._nkeys = 0
        self._tkeys = np.zeros(64, dtype=np.uint64)
        self._thead = np.full(64, -1, dtype=np.int64)
        self._enext = np.zeros(0, dtype=np.int64)
        self.sigs = np.zeros((0, num_perm), dtype=np.uint32)
        self.row_doc = np.zeros(0, dtype=np.int64)
        self._doc_row = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return self.n

    def _check(self, sig: np.ndarray) -> np.ndarray:
        sig = np.ascontiguousarray(sig, dtype=np.uint32)
        if sig.shape != (self.num_perm,):
            raise ValueError(f"signature must have shape ({self.num_perm},), got {sig.shape}")
        return sig

    def keys(self, sig: np.ndarray) -> np.ndarray:
        return band_keys(self._check(sig), self.bands, self.rows, self.seed)

    def row_of(self, doc_id: int) -> int:
        return int(self._doc_row[doc_id]) if 0 <= doc_id < self._doc_row.shape[0] else -1

    def insert(self, doc_id: int, sig: np.ndarray) -> None:
        if not 0 <= doc_id <= MAX_DOC_ID:
            raise ValueError(f"doc_id must be in 0..2**31-1, got {doc_id}")
        if self.row_of(doc_id) >= 0:
            raise ValueError(f"doc_id {doc_id} is already indexed")
        keys = self.keys(sig)
        if 2 * (self._nkeys + self.bands) > self._tkeys.shape[0]:
            cap = self._tkeys.shape[0]
            while 2 * (self._nkeys + self.bands) > cap:
                cap *= 2
            self._tkeys, self._thead = table_rehash(self._tkeys, self._thead, cap)
        row = self.n
        self._enext = _grow(self._enext, (row + 1) * self.bands)
        self.sigs = _grow(self.sigs, row + 1)
        self.row_doc = _grow(self.row_doc, row + 1)
        self._doc_row = _grow(self._doc_row, doc_id + 1, -1)
        self._nkeys += table_insert(self._tkeys, self._thead, self._enext, keys, row)
        self.sigs[row] = sig
        self.row_doc[row] = doc_id
        self._doc_row[doc_id] = row
        self.n += 1

    def query_rows(self, sig: np.ndarray) -> np.ndarray:
        return table_query(self._tkeys, self._thead, self._enext, self.keys(sig))

    def query(self, sig: np.ndarray) -> np.ndarray:
        """Doc ids of the candidates sharing a band with ``sig`` (sorted int64)."""
        return np.sort(self.row_doc[self.query_rows(sig)])

    @staticmethod
    def jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
        return _jaccard(sig_a, sig_b)

    def signature_of(self, doc_id: int) -> np.ndarray:
        row = self.row_of(doc_id)
        if row < 0:
            raise KeyError(f"doc_id {doc_id} is not indexed")
        return self.sigs[row].copy()

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self._tkeys, self._thead, self._enext, self.sigs,
                                      self.row_doc, self._doc_row))


class NearDupIndex:
    """Near-duplicate detector: MinHash signature + LSH candidates + Jaccard check."""

    def __init__(self, num_perm: int = NUM_PERM, threshold: float = 0.8, seed: int = 1,
                 scheme: str = "fss"):
        self.hasher = MinHasher(num_perm, seed, scheme)
        self.lsh = LSHIndex(num_perm, threshold, seed)
        self.threshold = threshold
        self._root = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lsh)

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        return self.hasher.signature_shingles(shingles)

    def check_and_add(self, doc_id: int, shingles: np.ndarray) -> tuple[int, float]:
        """(smallest matching doc id or -1, its estimated Jaccard); indexes the document."""
        if len(shingles) == 0:
            return -1, 0.0
        sig = self.signature(shingles)
        rows = self.lsh.query_rows(sig)
        match, est = -1, 0.0
        if rows.shape[0]:
            sims = np.count_nonzero(self.lsh.sigs[rows] == sig, axis=1) / self.lsh.num_perm
            ok = sims >= self.threshold
            if ok.any():
                docs = self.lsh.row_doc[rows[ok]]
                i = int(np.argmin(docs))
                match, est = int(docs[i]), float(sims[ok][i])
            else:
                est = float(sims.max())
        self.lsh.insert(doc_id, sig)
        self._root = _grow(self._root, self.lsh.n)
        self._root[self.lsh.n - 1] = doc_id if match < 0 else self.root_of(match)
        return match, est

    def matches_and_add(self, doc_id: int, shingles: np.ndarray, limit: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """(doc ids, estimated Jaccards) of up to ``limit`` indexed documents at or above the
        threshold, smallest ids first; indexes the document (its family root is itself)."""
        if len(shingles) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0)
        sig = self.signature(shingles)
        rows = self.lsh.query_rows(sig)
        docs, sims = np.empty(0, dtype=np.int64), np.empty(0)
        if rows.shape[0]:
            est = np.count_nonzero(self.lsh.sigs[rows] == sig, axis=1) / self.lsh.num_perm
            ok = est >= self.threshold
            docs, sims = self.lsh.row_doc[rows[ok]].astype(np.int64), est[ok]
            order = np.argsort(docs, kind="stable")[:limit]
            docs, sims = docs[order], sims[order]
        self.lsh.insert(doc_id, sig)
        self._root = _grow(self._root, self.lsh.n)
        self._root[self.lsh.n - 1] = doc_id
        return docs, sims

    def root_of(self, doc_id: int) -> int:
        """The earliest document of ``doc_id``'s near-duplicate family (itself if none)."""
        row = self.lsh.row_of(doc_id)
        if row < 0:
            raise KeyError(f"doc_id {doc_id} is not indexed")
        return int(self._root[row])

    def signature_of(self, doc_id: int) -> np.ndarray:
        return self.lsh.signature_of(doc_id)

    @property
    def nbytes(self) -> int:
        return self.lsh.nbytes + self._root.nbytes
