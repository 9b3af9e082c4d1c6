"""Span index: maximal exact matches between a usage output and contributed text.

Design (hashed n-grams with extension, not a suffix array). A suffix array (infini-gram,
OLMoTrace) answers arbitrary-length queries but is a static structure: keeping it
current while contributions arrive one at a time between queries means merging sorted
suffix runs, with suffix comparisons of unbounded length. Attribution only needs spans
of at least ``min_tokens`` (n) tokens, and every such span starts with an n-gram, so we
index each n-gram position and extend hits by direct comparison in the stored corpus:
- the corpus: token ids (uint32, via a token-hash -> id vocabulary, an open-addressing
  table), documents separated by a sentinel, so extension stops at document ends;
- a *main* index: every n-gram position bucketed by the top bits of the n-gram hash in
  a CSR layout (bucket starts uint32, positions uint32, 8-bit fingerprints), built by
  radix sort, 2 to 4 positions per bucket;
- a *memtable* for recent documents: chained buckets (head per bucket, next per
  position, fingerprint per position). Inserts cost O(tokens). When the memtable is
  full (a quarter of the main index, at least 65,536 positions) it is merged by
  rebuilding the main index: geometric growth, so each token is rebuilt O(1) times
  amortised (about 5 times), with a pause proportional to the index size at each merge.
No n-gram keys are stored: a hit is verified against the corpus itself, so the index is
exact (no false matches, whatever the hash collisions) and small: about 4 (corpus) +
4 (positions) + 1 (fingerprints) + 1..2 (bucket starts) bytes per token, plus the
memtable's (up to ~2.3) and the vocabulary's share (see ``nbytes``): about 12.5 bytes
per token at 10M tokens. A merge needs ~12 bytes per token of transient scratch.
Positions are uint32: at most about 4.29e9 indexed tokens.

Queries. For every output position s whose n-gram occurs at corpus position g (same
ids), the occurrence starts a maximal match when it cannot be extended to the left
(s = 0, or the previous tokens differ; the separator differs from everything) and its
document is allowed; it is then extended to the right. This yields every maximal match
(out_start, length, doc_id) of length >= n -- a span of the output occurring in an
allowed document that cannot be extended left or right in that occurrence -- each
once. Cost: one bucket probe per output position plus the occurrences of its n-gram.

Attribution weights. Let k_t be the number of allowed documents whose maximal matches
cover output token t and N the number of indexed documents. Token t carries weight
ln(1 + N / k_t), shared equally by those k_t documents; a document's credit is the sum
over the tokens it covers. So longer spans weigh more (more tokens), and a span found in
many contributions weighs less in total (idf-like) and less again per contribution.
Weights are credit / total credit (sum to 1); ``matched_tokens`` counts covered tokens.
"""
from __future__ import annotations

import numpy as np

from poa_stream.attribution import span_kernels as K

MEM_MIN = 1 << 16
UNBOUNDED = 1 << 62  # no cap on the work of one query (the core passes the policy's caps)
MEM_RATIO = 0.25


def allowed_mask_from(ids, size: int | None = None) -> np.ndarray:
    """Bool mask indexed by doc id, True at ``ids`` (``size`` defaults to max id + 1)."""
    ids = np.fromiter(ids, dtype=np.int64) if not isinstance(ids, np.ndarray) else ids
    n = int(ids.max()) + 1 if ids.size else 0
    mask = np.zeros(max(n, size or 0), dtype=np.bool_)
    mask[ids.astype(np.int64)] = True
    return mask


def _pow2_bits(n: int) -> int:
    """Smallest b >= 1 with 2**b >= n."""
    return max(1, (max(n, 1) - 1).bit_length())


class SpanIndex:
    """Incremental exact span index over token-hash sequences (see module docstring)."""

    def __init__(self, min_tokens: int = 8, mem_min: int = MEM_MIN, mem_ratio: float = MEM_RATIO):
        if min_tokens < 1:
            raise ValueError("min_tokens must be >= 1")
        self.n = min_tokens
        self.mem_min, self.mem_ratio = mem_min, mem_ratio
        self.n_docs = 0
        self.n_tokens = 0
        self.last_work = 0  # work of the last query (span_kernels.find_spans)
        self._len = 1  # corpus length; corpus[0] = SEP
        self._vkeys = np.zeros(1024, dtype=np.uint64)
        self._vvals = np.zeros(1024, dtype=np.uint32)
        self._nvocab = 0
        self._doc_start = np.zeros(64, dtype=np.int64)
        self._doc_ids = np.zeros(64, dtype=np.int64)
        self._corpus = np.full(1, K.SEP, dtype=np.uint32)
        self._main_end = 0
        self._bbits = 1
        self._bstart = np.zeros(3, dtype=np.uint32)
        self._bpos = np.zeros(0, dtype=np.uint32)
        self._bfp = np.zeros(0, dtype=np.uint8)
        self._rebuild(0)

    # ------------------------------------------------------------------ build
    def _rebuild(self, extra: int) -> None:
        """Merge the memtable into the main index; make room for ``extra`` positions."""
        end = self._len
        count = max(end - self.n_docs - 1, 1)
        self._bbits = _pow2_bits(-(-count // 4))
        self._bstart, self._bpos, self._bfp = K.build_main(self._corpus, end, self.n, self._bbits)
        self._main_end = end
        mcap = max(self.mem_min, int(end * self.mem_ratio), extra)
        corpus = np.empty(end + mcap, dtype=np.uint32)
        corpus[:end] = self._corpus[:end]
        self._corpus = corpus
        self._mbits = _pow2_bits(mcap // 4)
        self._mhead = np.zeros(1 << self._mbits, dtype=np.uint32)
        self._mnext = np.zeros(mcap, dtype=np.uint32)
        self._mfp = np.zeros(mcap, dtype=np.uint8)

    def _ids_adding(self, tokens: np.ndarray) -> np.ndarray:
        need = 2 * (self._nvocab + tokens.shape[0])
        if need > self._vkeys.shape[0]:
            cap = self._vkeys.shape[0]
            while cap < need:
                cap *= 2
            self._vkeys, self._vvals = K.vocab_rehash(self._vkeys, self._vvals, cap)
        ids, self._nvocab = K.vocab_add(self._vkeys, self._vvals, tokens, self._nvocab)
        return ids

    def add(self, doc_id: int, tokens: np.ndarray) -> None:
        """Index one contribution's token hashes under ``doc_id`` (a non-negative int)."""
        if doc_id < 0:
            raise ValueError(f"doc_id must be >= 0, got {doc_id}")
        tokens = np.ascontiguousarray(tokens, dtype=np.uint64)
        m = tokens.shape[0]
        if self._len + m + 1 > 0xFFFFFFFF:
            raise OverflowError("span index is full (2**32 corpus positions)")
        ids = self._ids_adding(tokens)
        if self._len + m + 1 > self._corpus.shape[0]:
            self._rebuild(m + 1)
        lo = self._len
        self._corpus[lo:lo + m] = ids
        self._corpus[lo + m] = K.SEP
        K.mem_insert(self._corpus, lo, lo + m, self.n, self._main_end, self._mbits,
                     self._mhead, self._mnext, self._mfp)
        if self.n_docs == self._doc_start.shape[0]:
            self._doc_start = np.resize(self._doc_start, 2 * self.n_docs)
            self._doc_ids = np.resize(self._doc_ids, 2 * self.n_docs)
        self._doc_start[self.n_docs] = lo
        self._doc_ids[self.n_docs] = doc_id
        self.n_docs += 1
        self.n_tokens += m
        self._len = lo + m + 1

    def compact(self) -> None:
        """Merge the memtable now (e.g. after a bulk load), leaving the usual headroom."""
        self._rebuild(0)

    # ------------------------------------------------------------------ query
    def find_spans(self, tokens: np.ndarray, allowed_mask: np.ndarray,
                   max_occurrences: int = UNBOUNDED, work_budget: int = UNBOUNDED):
        """Every maximal match of length >= min_tokens in an allowed document.

        ``allowed_mask[doc_id]`` (bool; ids past its end are not allowed). Returns int64
        arrays (out_start, length, doc_id) sorted by (out_start, doc_id, length).
        ``max_occurrences`` / ``work_budget`` bound the work (span_kernels.find_spans); the
        work done is left in :attr:`last_work`.
        """
        q = K.vocab_ids(self._vkeys, self._vvals, np.ascontiguousarray(tokens, dtype=np.uint64))
        mask = np.ascontiguousarray(allowed_mask, dtype=np.bool_)
        s, L, d, self.last_work = K.find_spans(
            q, self.n, self._corpus, self._bstart, self._bpos, self._bfp, self._bbits,
            self._mhead, self._mnext, self._mfp, self._mbits, self._main_end, self._doc_start,
            self.n_docs, self._doc_ids, mask, max_occurrences, work_budget)
        return s, L, d

    def attribute(self, tokens: np.ndarray, allowed_mask: np.ndarray,
                  max_occurrences: int = UNBOUNDED, work_budget: int = UNBOUNDED):
        """(doc_ids int64 sorted, weights float64 summing to 1, matched_tokens int).

        Empty arrays and 0 when nothing matched. Formula in the module docstring.
        """
        s, L, d = self.find_spans(tokens, allowed_mask, max_occurrences, work_budget)
        docs, w, matched = K.attribute_matches(len(tokens), s, L, d, float(self.n_docs))
        return docs, w, int(matched)

    # ------------------------------------------------------------------ stats
    def _arrays(self):
        return (self._corpus, self._bstart, self._bpos, self._bfp, self._mhead, self._mnext,
                self._mfp, self._vkeys, self._vvals, self._doc_start, self._doc_ids)

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's numpy arrays (allocated, not just used)."""
        return sum(a.nbytes for a in self._arrays())

    def bytes_per_token(self) -> float:
        return self.nbytes / max(self.n_tokens, 1)


class NgramIndex(SpanIndex):
    """Compatibility shim for the foundation API: ``allowed`` as a set of doc ids.

    ``attribute`` returns (doc_ids list, weights array, matched_tokens). New code should
    call ``SpanIndex.attribute`` with a bool mask (``allowed_mask_from``).
    """

    def attribute(self, tokens: np.ndarray, allowed) -> tuple[list[int], np.ndarray, int]:
        if not allowed:
            return [], np.zeros(0), 0
        docs, w, matched = super().attribute(tokens, allowed_mask_from(allowed))
        return docs.tolist(), w, matched
