"""Exact span matching of a usage output against contributed text (foundation version).

An n-gram (n = ``min_tokens`` consecutive token hashes) of the output that also occurs
in a contribution is a match; a matched position covers its n tokens. Each covered
output token carries one unit of credit shared equally by the documents covering it,
so a span found in many contributions weighs less per contribution, and longer
spans weigh more. ``weights`` sum to 1 over the documents, or are empty when nothing
matched.
"""
from __future__ import annotations

from collections import defaultdict

import numba as nb
import numpy as np

from attribution.text import mix64


@nb.njit(cache=True, nogil=True)
def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of ``n`` consecutive token hashes (len - n + 1 values)."""
    m = tokens.shape[0] - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    out = np.empty(m, dtype=np.uint64)
    for i in range(m):
        h = np.uint64(n)
        for j in range(n):
            h = mix64(h ^ tokens[i + j])
        out[i] = h
    return out


@nb.njit(cache=True, nogil=True)
def coverage_credit(n_tokens: int, n: int, pos: np.ndarray, doc: np.ndarray,
                    n_docs: int) -> np.ndarray:
    """Credit per document: each output token covered by k documents gives 1/k to each.

    ``pos[i]`` is the output position of a matched n-gram, ``doc[i]`` the dense
    document index (0..n_docs-1) it matched in.
    """
    cover = np.zeros((n_docs, n_tokens), dtype=np.bool_)
    for i in range(pos.shape[0]):
        for t in range(pos[i], pos[i] + n):
            cover[doc[i], t] = True
    credit = np.zeros(n_docs, dtype=np.float64)
    for t in range(n_tokens):
        k = 0
        for d in range(n_docs):
            if cover[d, t]:
                k += 1
        if k > 0:
            for d in range(n_docs):
                if cover[d, t]:
                    credit[d] += 1.0 / k
    return credit


class NgramIndex:
    """Incremental exact n-gram index: n-gram hash -> document ids that contain it."""

    def __init__(self, min_tokens: int = 8):
        if min_tokens < 1:
            raise ValueError("min_tokens must be >= 1")
        self.n = min_tokens
        self._postings: dict[int, list[int]] = defaultdict(list)
        self.n_tokens = 0

    def add(self, doc_id: int, tokens: np.ndarray) -> None:
        self.n_tokens += tokens.shape[0]
        for g in set(ngram_hashes(tokens, self.n).tolist()):
            self._postings[g].append(doc_id)

    def attribute(self, tokens: np.ndarray, allowed: set[int]) -> tuple[list[int], np.ndarray, int]:
        """Documents (among ``allowed``) matched by spans of ``tokens``.

        Returns (doc_ids sorted, weights summing to 1, matched output tokens).
        """
        grams = ngram_hashes(tokens, self.n)
        pos, hits = [], []
        for i, g in enumerate(grams.tolist()):
            for d in self._postings.get(g, ()):
                if d in allowed:
                    pos.append(i)
                    hits.append(d)
        if not hits:
            return [], np.zeros(0), 0
        docs = sorted(set(hits))
        dense = {d: k for k, d in enumerate(docs)}
        credit = coverage_credit(tokens.shape[0], self.n, np.asarray(pos, dtype=np.int64),
                                 np.asarray([dense[d] for d in hits], dtype=np.int64), len(docs))
        matched = float(credit.sum())
        return docs, credit / matched, int(round(matched))
