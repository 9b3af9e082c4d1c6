"""Exact integer splitting of an amount by weights (largest remainder).

``split_amount(total, weights)`` returns int64 parts with ``parts.sum() == total``
exactly, for any ``0 <= total <= 2**53`` and weights >= 0 with a positive sum.
Weights are first quantized to integers summing to about 2**30 (float weights) or
used as given (integer weights); each part gets floor(total * q_i / Q), and the
leftover units (fewer than len(weights)) go one each to the largest remainders,
ties broken by the lower index. Deterministic: callers order recipients by a
stable key (e.g. account name) before splitting.
"""
from __future__ import annotations

import numba as nb
import numpy as np

QUANT = 1 << 30
MAX_TOTAL = 1 << 53


@nb.njit(cache=True, nogil=True)
def split_quantized(total: np.int64, q: np.ndarray) -> np.ndarray:
    """Largest-remainder split of ``total`` by integer weights ``q`` (sum < 2**31)."""
    n = q.shape[0]
    out = np.zeros(n, dtype=np.int64)
    Q = np.int64(0)
    for i in range(n):
        Q += q[i]
    if Q <= 0 or total <= 0:
        return out
    a = total // Q
    b = total % Q
    rem = np.empty(n, dtype=np.int64)
    assigned = np.int64(0)
    for i in range(n):
        prod = b * q[i]
        out[i] = a * q[i] + prod // Q
        rem[i] = prod % Q
        assigned += out[i]
    left = total - assigned
    if left > 0:
        # stable sort on -rem: ties keep the lower index first
        order = np.argsort(-rem, kind="mergesort")
        for j in range(left):
            out[order[j]] += 1
    return out


@nb.njit(cache=True, nogil=True)
def quantize(weights: np.ndarray) -> np.ndarray:
    s = 0.0
    for i in range(weights.shape[0]):
        s += weights[i]
    q = np.zeros(weights.shape[0], dtype=np.int64)
    if s <= 0.0:
        return q
    for i in range(weights.shape[0]):
        q[i] = np.int64(np.floor(weights[i] / s * QUANT))
    return q


def split_amount(total: int, weights) -> np.ndarray:
    """Split ``total`` micro-units by ``weights``; the parts sum exactly to ``total``."""
    if not 0 <= total <= MAX_TOTAL:
        raise ValueError(f"total must be within 0..2**53 micro-units, got {total}")
    w = np.asarray(weights)
    if w.ndim != 1 or w.shape[0] == 0:
        raise ValueError("weights must be a non-empty 1-D array")
    if np.issubdtype(w.dtype, np.integer):
        q = w.astype(np.int64)
        if (q < 0).any() or q.sum() >= (1 << 31):
            q = quantize(q.astype(np.float64))
    else:
        w = w.astype(np.float64)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("weights must be finite and non-negative")
        q = quantize(w)
    if q.sum() <= 0:
        raise ValueError("weights must have a positive sum")
    return split_quantized(np.int64(total), q)
