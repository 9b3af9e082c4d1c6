"""numba kernels of the span index (see attribution/spans.py for the design).

Shared conventions:
- The corpus is one uint32 array of token ids: ``corpus[0] = SEP``, then every document's
  ids followed by one ``SEP``. Query ids use ``UNK`` for tokens never indexed. Neither
  sentinel equals a real id, and ``SEP != UNK``, so comparisons stop at document ends and
  at unknown tokens without bounds checks.
- A window is ``n`` consecutive ids without a sentinel. Its hash is
  ``H = mix64(sum_j (id_j + 1) * B**(n-1-j) mod 2**64)``, computed rolling; its bucket in
  a table of 2**bits buckets is ``H >> (64 - bits)`` and its fingerprint ``H & 0xff``.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from poa_stream.attribution.text import mix64
from poa_stream.attribution.vocab import UNK, vocab_add, vocab_ids, vocab_rehash  # noqa: F401 (re-export)

SEP = np.uint32(0xFFFFFFFF)
_B = np.uint64(0x9E3779B97F4A7C15)


# ---------------------------------------------------------------- window hashes
@nb.njit(cache=True, nogil=True)
def window_hashes(ids, lo, hi, n):
    """(H uint64, valid bool) of every window starting in [lo, hi - n] of ``ids``."""
    m = hi - lo - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.bool_)
    hs = np.empty(m, dtype=np.uint64)
    ok = np.empty(m, dtype=np.bool_)
    bn1 = np.uint64(1)
    for _ in range(n - 1):
        bn1 *= _B
    h = np.uint64(0)
    bad = lo - 1  # last sentinel position seen
    for j in range(lo, lo + n):
        h = h * _B + np.uint64(ids[j]) + np.uint64(1)
        if ids[j] >= UNK:
            bad = j
    for p in range(lo, hi - n + 1):
        if p > lo:
            x = ids[p + n - 1]
            h = (h - (np.uint64(ids[p - 1]) + np.uint64(1)) * bn1) * _B + np.uint64(x) + np.uint64(1)
            if x >= UNK:
                bad = p + n - 1
        hs[p - lo] = mix64(h)
        ok[p - lo] = bad < p
    return hs, ok


# ---------------------------------------------------------------- index build
@nb.njit(cache=True, nogil=True)
def build_main(corpus, end, n, bits):
    """Bucketed CSR of every valid window starting before ``end``.

    -> (bstart uint32[2**bits + 1], bpos uint32[count], bfp uint8[count]); positions of
    a bucket are ascending. A two-level radix sort keeps memory access cache friendly:
    windows are first scattered by the top <= 8 bucket bits into 256 partitions
    (transient: 12 bytes per window), then each partition is counting-sorted by the
    remaining bits into its own contiguous slice of the output.
    """
    nbk = 1 << bits
    P = min(8, bits)
    nparts = 1 << P
    pshift = np.uint64(64 - P)
    bshift = np.uint64(64 - bits)
    sub = 1 << (bits - P)
    last = end - n + 1  # window starts are < last
    chunk = 1 << 20
    pcount = np.zeros(nparts + 1, dtype=np.int64)
    for a in range(0, max(last, 0), chunk):
        b = min(a + chunk, last)
        hs, ok = window_hashes(corpus, a, b + n - 1, n)
        for i in range(hs.shape[0]):
            if ok[i]:
                pcount[np.int64(hs[i] >> pshift) + 1] += 1
    for p in range(nparts):
        pcount[p + 1] += pcount[p]
    total = pcount[nparts]
    th = np.empty(total, dtype=np.uint64)
    tp = np.empty(total, dtype=np.uint32)
    cur = pcount[:nparts].copy()
    for a in range(0, max(last, 0), chunk):
        b = min(a + chunk, last)
        hs, ok = window_hashes(corpus, a, b + n - 1, n)
        for i in range(hs.shape[0]):
            if ok[i]:
                p = np.int64(hs[i] >> pshift)
                th[cur[p]] = hs[i]
                tp[cur[p]] = a + i
                cur[p] += 1
    bstart = np.zeros(nbk + 1, dtype=np.uint32)
    bpos = np.empty(total, dtype=np.uint32)
    bfp = np.empty(total, dtype=np.uint8)
    local = np.zeros(sub + 1, dtype=np.int64)
    for p in range(nparts):
        lo, hi = pcount[p], pcount[p + 1]
        base = p * sub
        local[:] = 0
        for i in range(lo, hi):
            local[np.int64(th[i] >> bshift) - base + 1] += 1
        local[0] = lo
        for j in range(sub):
            local[j + 1] += local[j]
        bstart[base:base + sub] = local[:sub]
        for i in range(lo, hi):
            j = np.int64(th[i] >> bshift) - base
            bpos[local[j]] = tp[i]
            bfp[local[j]] = np.uint8(th[i] & np.uint64(0xFF))
            local[j] += 1
    bstart[nbk] = total
    return bstart, bpos, bfp


@nb.njit(cache=True, nogil=True)
def mem_insert(corpus, lo, hi, n, main_end, mbits, mhead, mnext, mfp):
    """Chain every valid window of corpus[lo:hi] into the memtable (newest first)."""
    hs, ok = window_hashes(corpus, lo, hi, n)
    shift = np.uint64(64 - mbits)
    for k in range(hs.shape[0]):
        if ok[k]:
            p = lo + k
            b = np.int64(hs[k] >> shift)
            i = p - main_end
            mnext[i] = mhead[b]
            mhead[b] = p
            mfp[i] = np.uint8(hs[k] & np.uint64(0xFF))


# ---------------------------------------------------------------- queries
@nb.njit(cache=True, nogil=True, inline="always")
def _hit(q, s, n, g, corpus, doc_start, ndocs, doc_ids, allowed):
    """(length, doc id) of the maximal match of q[s:] at corpus position g, or (0, -1)
    when the window differs, the match extends to the left, or the doc is not allowed."""
    for j in range(n):
        if corpus[g + j] != q[s + j]:
            return 0, -1
    if s > 0 and corpus[g - 1] == q[s - 1]:
        return 0, -1
    row = np.searchsorted(doc_start[:ndocs], g, side="right") - 1
    d = doc_ids[row]
    if d >= allowed.shape[0] or not allowed[d]:
        return 0, -1
    m = q.shape[0]
    L = n
    while s + L < m and corpus[g + L] == q[s + L]:
        L += 1
    return L, d


@nb.njit(cache=True, nogil=True)
def _push2(a, b, k, x, y):
    if k == a.shape[0]:
        a2 = np.empty(2 * k, dtype=np.int64)
        b2 = np.empty(2 * k, dtype=np.int64)
        a2[:k], b2[:k] = a, b
        a, b = a2, b2
    a[k], b[k] = x, y
    return a, b, k + 1


@nb.njit(cache=True, nogil=True)
def find_spans(q, n, corpus, bstart, bpos, bfp, bbits, mhead, mnext, mfp, mbits,
               main_end, doc_start, ndocs, doc_ids, allowed, max_occ, budget):
    """Every maximal match (out_start, length, doc_id) of length >= n of ``q`` in an
    allowed document; sorted by (out_start, doc_id, length), unique; and the work done.

    Bounded: at most ``max_occ`` corpus occurrences are followed per output position (the
    first ones in index order: main index, then memtable; candidates are then at most
    len(q) * max_occ, 16 bytes each), and verification stops once ``budget`` token
    comparisons are spent (later candidates are dropped, plus at most one extension past
    it), so a repetitive output against a repetitive corpus costs
    O(len(q) * max_occ + budget + len(q)), not O(occurrences x length). Both caps are
    deterministic; a capped position or an exhausted budget may miss matches. ``work``
    counts bucket probes, chain steps and comparisons.

    Written as passes over all output positions (bucket bounds, fingerprints, positions,
    chains, verification), each pass of independent loads, so that the cache misses
    of different positions overlap.
    """
    hs, ok = window_hashes(q, 0, q.shape[0], n)
    M = hs.shape[0]
    bshift = np.uint64(64 - bbits)
    mshift = np.uint64(64 - mbits)
    e0 = np.zeros(M, dtype=np.int64)
    e1 = np.zeros(M, dtype=np.int64)
    gm = np.zeros(M, dtype=np.int64)
    for s in range(M):
        if ok[s]:
            b = np.int64(hs[s] >> bshift)
            e0[s] = bstart[b]
            e1[s] = bstart[b + 1]
            gm[s] = mhead[np.int64(hs[s] >> mshift)]
    cs = np.empty(M + 16, dtype=np.int64)  # candidates: output position, corpus position
    cg = np.empty(M + 16, dtype=np.int64)
    k = 0
    occ = np.zeros(M, dtype=np.int64)
    work = 0
    for s in range(M):
        fp = np.uint8(hs[s] & np.uint64(0xFF))
        for e in range(e0[s], e1[s]):
            work += 1
            if bfp[e] == fp:
                cs, cg, k = _push2(cs, cg, k, s, e)
                occ[s] += 1
                if occ[s] >= max_occ:
                    break
    for c in range(k):
        cg[c] = bpos[cg[c]]
    active = np.flatnonzero(gm)
    while active.shape[0] > 0:
        w = 0
        for a in active:
            if occ[a] >= max_occ:
                continue
            i = gm[a] - main_end
            work += 1
            if mfp[i] == np.uint8(hs[a] & np.uint64(0xFF)):
                cs, cg, k = _push2(cs, cg, k, a, gm[a])
                occ[a] += 1
            gm[a] = mnext[i]
            if gm[a] != 0:
                active[w] = a
                w += 1
        active = active[:w]
    rs = np.empty(k, dtype=np.int64)
    rl = np.empty(k, dtype=np.int64)
    rd = np.empty(k, dtype=np.int64)
    r = 0
    verify = 0
    for c in range(k):
        if verify > budget:
            break
        L, d = _hit(q, cs[c], n, cg[c], corpus, doc_start, ndocs, doc_ids, allowed)
        verify += n + L
        work += n + L
        if L > 0:
            rs[r], rl[r], rd[r] = cs[c], L, d
            r += 1
    s_, l_, d_ = sort_unique(rs[:r], rl[:r], rd[:r])
    return s_, l_, d_, work


@nb.njit(cache=True, nogil=True)
def sort_unique(s, L, d):
    """Triples sorted by (s, d, L) without repeats."""
    o = np.argsort(L, kind="mergesort")
    o = o[np.argsort(d[o], kind="mergesort")]
    o = o[np.argsort(s[o], kind="mergesort")]
    keep = np.ones(o.shape[0], dtype=np.bool_)
    for i in range(1, o.shape[0]):
        a, b = o[i - 1], o[i]
        keep[i] = not (s[a] == s[b] and d[a] == d[b] and L[a] == L[b])
    o = o[keep]
    return s[o], L[o], d[o]


@nb.njit(cache=True, nogil=True)
def span_credit(m, s, L, dense, ndocs, n_total):
    """Credit per dense doc and matched token count (formula in spans.py).

    ``s, L, dense``: matches sorted by output start; ``dense`` in 0..ndocs-1.
    """
    o = np.argsort(dense, kind="mergesort")  # by doc, then start
    cnt = np.zeros(m + 1, dtype=np.int64)
    ia = np.empty(o.shape[0], dtype=np.int64)
    ib = np.empty(o.shape[0], dtype=np.int64)
    idoc = np.empty(o.shape[0], dtype=np.int64)
    k = 0
    cur_d, a, b = -1, 0, 0
    for t in range(o.shape[0] + 1):
        if t < o.shape[0]:
            j = o[t]
            if dense[j] == cur_d and s[j] <= b:
                b = max(b, s[j] + L[j])
                continue
        if cur_d >= 0:
            ia[k], ib[k], idoc[k] = a, b, cur_d
            cnt[a] += 1
            cnt[b] -= 1
            k += 1
        if t < o.shape[0]:
            cur_d, a, b = dense[j], s[j], s[j] + L[j]
    pre = np.zeros(m + 1, dtype=np.float64)
    c = 0
    matched = 0
    for t in range(m):
        c += cnt[t]
        w = 0.0
        if c > 0:
            matched += 1
            w = np.log1p(n_total / c) / c
        pre[t + 1] = pre[t] + w
    credit = np.zeros(ndocs, dtype=np.float64)
    for i in range(k):
        credit[idoc[i]] += pre[ib[i]] - pre[ia[i]]
    return credit, matched


@nb.njit(cache=True, nogil=True)
def attribute_matches(m, s, L, d, n_total):
    """(doc ids sorted, weights summing to 1, matched tokens) of matches (s, L, d)."""
    if s.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64), 0
    docs = np.unique(d)
    dense = np.searchsorted(docs, d)
    credit, matched = span_credit(m, s, L, dense, docs.shape[0], n_total)
    return docs, credit / credit.sum(), matched
