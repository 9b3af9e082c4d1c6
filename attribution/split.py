"""Exact integer splitting of an amount by weights (largest remainder).

``split_amount(total, weights)`` returns int64 parts with ``parts.sum() == total``
exactly, for any ``0 <= total <= 2**53`` and weights >= 0 with a positive sum.
Weights are turned into exact integers q_i proportional to them (integer weights as
given; float weights through their exact binary fractions, scaled to a common power of
two, so no precision is lost); each part gets floor(total * q_i / Q) and the leftover
units (fewer than len(weights)) go one each to the largest remainders, ties broken by
the lower index. Hence every part is within one unit of total * w_i / sum(w), and a
zero weight gets nothing. Deterministic: callers order recipients by a stable key
(e.g. account name) before splitting. When Q < 2**31 the numba kernel computes the
split; otherwise Python's big integers do the same arithmetic.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from poa_stream.streams.policy import MAX_FEE_MICRO

MAX_TOTAL = MAX_FEE_MICRO  # the contract's maximum fee (streams/policy.py): one bound
_KERNEL_MAX_Q = 1 << 31


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


def split_exact(total: int, q: list[int]) -> np.ndarray:
    """The same split as ``split_quantized`` with Python integers (any size)."""
    Q = sum(q)
    parts = [total * x // Q for x in q]
    left = total - sum(parts)
    if left:
        order = sorted(range(len(q)), key=lambda i: (-(total * q[i] % Q), i))
        for i in order[:left]:
            parts[i] += 1
    return np.asarray(parts, dtype=np.int64)


def exact_integer_weights(weights: np.ndarray) -> list[int]:
    """Integers exactly proportional to finite non-negative float weights."""
    ratios = [float(x).as_integer_ratio() for x in weights]
    den = max(d for _, d in ratios)  # every denominator is a power of two
    return [n * (den // d) for n, d in ratios]


def split_amount(total: int, weights) -> np.ndarray:
    """Split ``total`` micro-units by ``weights``; the parts sum exactly to ``total``."""
    if not 0 <= total <= MAX_TOTAL:
        raise ValueError(f"total must be within 0..2**53 micro-units, got {total}")
    w = np.asarray(weights)
    if w.ndim != 1 or w.shape[0] == 0:
        raise ValueError("weights must be a non-empty 1-D array")
    if np.issubdtype(w.dtype, np.integer):
        q = [int(x) for x in w]
    else:
        w = w.astype(np.float64)
        if not np.isfinite(w).all():
            raise ValueError("weights must be finite and non-negative")
        q = exact_integer_weights(w) if (w >= 0).all() else [-1]
    if min(q) < 0:
        raise ValueError("weights must be finite and non-negative")
    Q = sum(q)
    if Q <= 0:
        raise ValueError("weights must have a positive sum")
    if Q < _KERNEL_MAX_Q:
        return split_quantized(np.int64(total), np.asarray(q, dtype=np.int64))
    return split_exact(int(total), q)
