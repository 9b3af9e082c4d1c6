"""Cross-account near-duplicate clusters: sybil-farm detection with union-find in numpy arrays.

Contract:
- Nodes are contributions, dense ints ``>= 0`` assigned by the caller (the core's ``c.idx``);
  accounts are dense ints (``attribution.velocity.Interner``); times are event seconds.
- ``FarmClusters(min_accounts=4, burst_s=600)``.
  ``.add_edge(contrib_a, contrib_b, account_a, account_b, ts_a_s=nan, ts_b_s=nan) -> root``
  records an exact or near-duplicate relation (the caller's detector decides: word-5-gram Jaccard
  >= 0.8) and merges the two clusters. Edges between contributions of the SAME account are
  ignored (-1 returned): a spammer re-uploading its own text is a duplicate, not a farm.
  Union by size (ties: the smaller index becomes the root), path halving; each root also owns a
  circular member list (``nxt``), so ``members(root)`` costs O(cluster size), not O(all nodes).
- ``cluster_of(c) -> root`` (``c`` itself when it was never in an edge).
  ``accounts_in_cluster(root) -> sorted unique int64 array``.
- The farm rule, ``is_farm(root, min_accounts=4, burst_s=600)``: a cluster is a farm when
  some time window of ``burst_s`` seconds holds members uploaded by at least ``min_accounts``
  DISTINCT accounts. ``burst_s=None`` drops the time condition (distinct accounts only).
  ``farm_members(root)`` returns the members that lie in such a window (sorted). Why the window:
  an honest original copied later by several spammers forms a multi-account cluster too, but the
  copies arrive minutes to days after it, so the original never sits in a dense window with
  them; a farm posts the same text from many accounts at once. Members without a timestamp
  (NaN) never count toward, nor are marked by, a window.
- Deterministic: results depend only on the sequence of edges.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def find(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@nb.njit(cache=True, nogil=True)
def union(parent: np.ndarray, size: np.ndarray, nxt: np.ndarray, a: int, b: int) -> int:
    ra, rb = find(parent, a), find(parent, b)
    if ra == rb:
        return ra
    if size[ra] < size[rb] or (size[ra] == size[rb] and rb < ra):
        ra, rb = rb, ra
    parent[rb] = ra
    size[ra] += size[rb]
    nxt[ra], nxt[rb] = nxt[rb], nxt[ra]  # splice the two circular member lists
    return ra


@nb.njit(cache=True, nogil=True)
def walk(nxt: np.ndarray, root: int, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    x, k = root, 0
    while k < n:
        out[k] = x
        k += 1
        x = nxt[x]
    return out


@nb.njit(cache=True, nogil=True)
def dense_windows(ts: np.ndarray, codes: np.ndarray, n_codes: int, burst_s: float, min_accounts: int):
    """Over ``ts`` sorted ascending with account ``codes`` (0..n_codes-1): (mask of positions in
    a window of span <= burst_s holding >= min_accounts distinct codes, max distinct in a window)."""
    n = ts.shape[0]
    cnt = np.zeros(n_codes, dtype=np.int64)
    cover = np.zeros(n + 1, dtype=np.int64)
    distinct, best, i = 0, 0, 0
    for j in range(n):
        if cnt[codes[j]] == 0:
            distinct += 1
        cnt[codes[j]] += 1
        while ts[j] - ts[i] > burst_s:
            cnt[codes[i]] -= 1
            if cnt[codes[i]] == 0:
                distinct -= 1
            i += 1
        best = max(best, distinct)
        if distinct >= min_accounts:
            cover[i] += 1
            cover[j + 1] -= 1
    mask = np.zeros(n, dtype=np.bool_)
    run = 0
    for k in range(n):
        run += cover[k]
        mask[k] = run > 0
    return mask, best


class FarmClusters:
    """Union-find over cross-account duplicate edges (see the module contract)."""

    def __init__(self, min_accounts: int = 4, burst_s: float | None = 600.0, capacity: int = 1024):
        if min_accounts < 2 or (burst_s is not None and not burst_s >= 0):
            raise ValueError(f"min_accounts={min_accounts}, burst_s={burst_s}: a farm needs at least 2 "
                             "accounts and a window of >= 0 seconds (None: no time condition)")
        self.min_accounts, self.burst_s = int(min_accounts), burst_s
        self.parent = np.arange(capacity, dtype=np.int64)
        self.size = np.ones(capacity, dtype=np.int64)
        self.nxt = np.arange(capacity, dtype=np.int64)
        self.account = np.full(capacity, -1, dtype=np.int64)
        self.ts = np.full(capacity, np.nan, dtype=np.float64)
        self.edges = 0

    def _grow(self, n: int) -> None:
        cap = self.parent.shape[0]
        if n <= cap:
            return
        new = max(n, 2 * cap)
        fresh = np.arange(cap, new, dtype=np.int64)
        self.parent = np.concatenate([self.parent, fresh])
        self.nxt = np.concatenate([self.nxt, fresh])
        self.size = np.concatenate([self.size, np.ones(new - cap, dtype=np.int64)])
        self.account = np.concatenate([self.account, np.full(new - cap, -1, dtype=np.int64)])
        self.ts = np.concatenate([self.ts, np.full(new - cap, np.nan)])

    def add_edge(self, contrib_a: int, contrib_b: int, account_a: int, account_b: int,
                 ts_a_s: float = math.nan, ts_b_s: float = math.nan) -> int:
        if min(contrib_a, contrib_b, account_a, account_b) < 0:
            raise ValueError("contributions and accounts are dense ints >= 0")
        if account_a == account_b:
            return -1
        self._grow(max(contrib_a, contrib_b) + 1)
        for c, acc, ts in ((contrib_a, account_a, ts_a_s), (contrib_b, account_b, ts_b_s)):
            self.account[c] = acc
            if not math.isnan(ts):
                self.ts[c] = ts
        self.edges += 1
        return int(union(self.parent, self.size, self.nxt, contrib_a, contrib_b))

    def cluster_of(self, contrib: int) -> int:
        if contrib >= self.parent.shape[0]:
            return int(contrib)
        return int(find(self.parent, contrib))

    def members(self, root: int) -> np.ndarray:
        root = self.cluster_of(root)
        if root >= self.parent.shape[0]:
            return np.array([root], dtype=np.int64)
        return np.sort(walk(self.nxt, root, int(self.size[root])))

    def accounts_in_cluster(self, root: int) -> np.ndarray:
        acc = self.account[self.members(root)] if root < self.parent.shape[0] else np.zeros(0, np.int64)
        return np.unique(acc[acc >= 0])

    def _window(self, root: int, min_accounts: int, burst_s: float):
        if not burst_s >= 0:
            raise ValueError(f"burst_s={burst_s}: use a window of >= 0 seconds, or None")
        m = self.members(root)
        m = m[(~np.isnan(self.ts[m])) & (self.account[m] >= 0)]
        order = np.lexsort((m, self.ts[m]))
        m = m[order]
        uniq, codes = np.unique(self.account[m], return_inverse=True)
        mask, best = dense_windows(self.ts[m], codes.astype(np.int64), len(uniq), float(burst_s),
                                   int(min_accounts))
        return m, mask, int(best)

    def is_farm(self, root: int, min_accounts: int | None = None, burst_s: float | None | str = "default") -> bool:
        k = self.min_accounts if min_accounts is None else int(min_accounts)
        b = self.burst_s if burst_s == "default" else burst_s
        if len(self.accounts_in_cluster(root)) < k:
            return False
        return b is None or self._window(root, k, b)[2] >= k

    def farm_members(self, root: int, min_accounts: int | None = None,
                     burst_s: float | None | str = "default") -> np.ndarray:
        k = self.min_accounts if min_accounts is None else int(min_accounts)
        b = self.burst_s if burst_s == "default" else burst_s
        if not self.is_farm(root, k, b):
            return np.zeros(0, dtype=np.int64)
        if b is None:
            m = self.members(root)
            return m[self.account[m] >= 0]
        m, mask, _ = self._window(root, k, b)
        return np.sort(m[mask])
