"""Contributor velocity: online per-account burst detection over upload timestamps.

Contract:
- Accounts are dense ints ``0..n-1`` assigned by the caller; ``Interner`` maps str -> int
  (first seen = next int, stable for the life of the object; ``names[i]`` is the inverse).
- ``VelocityTracker(window_s=600, alpha=0.1, prior_gap_s=86400)``;
  ``.observe(account_idx, ts_s) -> burst_score`` with ``ts_s`` event time in seconds (float).
  Per account it keeps (numpy arrays, grown by doubling):
  - ``recent``: uploads in the last ~``window_s``, as an exponentially decayed count
    (time constant ``window_s``): ``recent <- recent * exp(-gap / window_s) + 1``;
  - ``log_gap``: EWMA (weight ``alpha``) of ``ln(1 + gap_s)``, the account's usual pace in
    log space (robust to single long pauses); a new account starts at ``prior_gap_s``.
  ``burst_score = recent / max(1, window_s / usual_gap)`` where ``usual_gap = exp(log_gap) - 1``
  is taken *before* this upload updates it: ~1 for an upload at the account's usual pace, ~k
  for k uploads within a window from an account that usually uploads less than once per window.
  An account that always uploads fast has a high usual rate and scores ~1: velocity is relative.
- Event time may go backwards: a negative gap counts as 0 (same instant); ``last_ts`` never
  decreases. Deterministic: no randomness, results depend only on the observation sequence.
- ``observe_many(accounts, ts_s) -> scores`` is the same loop in one kernel call (replay, bench).
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np


class Interner:
    """str -> dense int, first come first numbered."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self.names: list[str] = []

    def __call__(self, name: str) -> int:
        i = self._ids.get(name)
        if i is None:
            i = self._ids[name] = len(self.names)
            self.names.append(name)
        return i

    def get(self, name: str, default: int = -1) -> int:
        return self._ids.get(name, default)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self._ids


@nb.njit(cache=True, nogil=True)
def observe_one(last_ts, log_gap, recent, count, i, ts, window_s, alpha, prior_log_gap):
    """Update account ``i`` with an upload at ``ts`` (seconds); return its burst score."""
    gap = 0.0
    if count[i] == 0:
        last_ts[i] = ts
        log_gap[i] = prior_log_gap
        recent[i] = 1.0
        count[i] = 1
    else:
        gap = max(0.0, ts - last_ts[i])
        recent[i] = recent[i] * math.exp(-gap / window_s) + 1.0
        if ts > last_ts[i]:
            last_ts[i] = ts
        count[i] += 1
    usual_gap = math.exp(log_gap[i]) - 1.0
    expected = window_s / usual_gap if usual_gap > 0.0 else np.inf
    score = recent[i] / max(1.0, expected)
    if count[i] > 1:
        log_gap[i] = (1.0 - alpha) * log_gap[i] + alpha * math.log1p(gap)
    return score


@nb.njit(cache=True, nogil=True)
def observe_loop(last_ts, log_gap, recent, count, accounts, ts, window_s, alpha, prior_log_gap):
    out = np.empty(accounts.shape[0], dtype=np.float64)
    for k in range(accounts.shape[0]):
        out[k] = observe_one(last_ts, log_gap, recent, count, accounts[k], ts[k],
                             window_s, alpha, prior_log_gap)
    return out


class VelocityTracker:
    """Online per-account burst score (see the module contract)."""

    def __init__(self, window_s: float = 600.0, alpha: float = 0.1, prior_gap_s: float = 86_400.0,
                 capacity: int = 64):
        if window_s <= 0 or not 0 < alpha <= 1 or prior_gap_s <= 0:
            raise ValueError("need window_s > 0, 0 < alpha <= 1 and prior_gap_s > 0")
        self.window_s, self.alpha = float(window_s), float(alpha)
        self.prior_log_gap = math.log1p(prior_gap_s)
        self.last_ts = np.zeros(capacity, dtype=np.float64)
        self.log_gap = np.zeros(capacity, dtype=np.float64)
        self.recent = np.zeros(capacity, dtype=np.float64)
        self.count = np.zeros(capacity, dtype=np.int64)

    def _grow(self, n: int) -> None:
        cap = self.count.shape[0]
        if n <= cap:
            return
        new = max(n, 2 * cap)
        for name in ("last_ts", "log_gap", "recent", "count"):
            old = getattr(self, name)
            arr = np.zeros(new, dtype=old.dtype)
            arr[:cap] = old
            setattr(self, name, arr)

    def observe(self, account_idx: int, ts_s: float) -> float:
        if account_idx < 0:
            raise ValueError(f"account_idx={account_idx}: accounts are dense ints >= 0 (use Interner)")
        self._grow(account_idx + 1)
        return float(observe_one(self.last_ts, self.log_gap, self.recent, self.count, account_idx,
                                 float(ts_s), self.window_s, self.alpha, self.prior_log_gap))

    def observe_many(self, accounts: np.ndarray, ts_s: np.ndarray) -> np.ndarray:
        acc = np.ascontiguousarray(accounts, dtype=np.int64)
        ts = np.ascontiguousarray(ts_s, dtype=np.float64)
        if acc.shape != ts.shape:
            raise ValueError("accounts and ts_s must have the same length")
        if acc.size:
            if acc.min() < 0:
                raise ValueError("accounts are dense ints >= 0 (use Interner)")
            self._grow(int(acc.max()) + 1)
        return observe_loop(self.last_ts, self.log_gap, self.recent, self.count, acc, ts,
                            self.window_s, self.alpha, self.prior_log_gap)

    def uploads(self, account_idx: int) -> int:
        return int(self.count[account_idx]) if account_idx < self.count.shape[0] else 0

    def usual_gap_s(self, account_idx: int) -> float:
        """The account's usual inter-upload gap in seconds (NaN before its first upload)."""
        if self.uploads(account_idx) == 0:
            return math.nan
        return math.expm1(float(self.log_gap[account_idx]))
