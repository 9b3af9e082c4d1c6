"""Per-contribution numpy columns the usage and settlement paths read without a Python loop.

Indexed by contribution index (``ContributionState.idx``, the span index's doc id):
- ``eligible`` (bool): status not in duplicate/rejected/spam, kept current by the
  contribution's ``status`` setter (processors/state.py), so a usage's span query takes
  it as its allowed mask with no per-usage copy (O(1) per usage, not O(corpus));
- ``datanet`` / ``contributor`` (int32 codes, first-seen order: deterministic);
- ``voted`` (bool): the contribution has at least one validator vote;
- ``accepted`` (bool): its status is ``accepted`` (validators accepted it);
- ``weight`` (int64): the contribution's pool weight, its number of *distinct* token
  windows of ``window`` tokens (the span length that can earn credit). Splitting a text
  into parts never raises the sum: every window of a part is a window of the whole, and
  each cut loses ``window - 1`` windows; repeating a phrase inside a text adds nothing.
  A text shorter than a window weighs 1. The core then lowers it to the windows no earlier
  eligible contribution holds (handlers_contributions.py ``_novel_windows``; annotations
  excepted): a later upload weighs what it added.
Also the eligible count per datanet (O(1) "does this datanet have anyone to pay?").
"""
from __future__ import annotations

import numpy as np

from poa_stream.attribution.shingles import ngram_hashes

INELIGIBLE = ("duplicate", "rejected", "spam")


def pool_weight(tokens: np.ndarray, window: int) -> int:
    """Distinct ``window``-token windows of ``tokens`` (1 for a shorter, non-empty text)."""
    if tokens.shape[0] == 0:
        return 0
    if tokens.shape[0] < window:
        return 1
    return int(np.unique(ngram_hashes(tokens, window)).shape[0])


class CorpusArrays:
    def __init__(self, window: int):
        self.window = window
        self.n = 0
        self.eligible = np.zeros(1024, dtype=np.bool_)
        self.voted = np.zeros(1024, dtype=np.bool_)
        self.accepted = np.zeros(1024, dtype=np.bool_)  # status == "accepted" (validated)
        self.datanet = np.zeros(1024, dtype=np.int32)
        self.contributor = np.zeros(1024, dtype=np.int32)
        self.weight = np.zeros(1024, dtype=np.int64)
        self.datanet_names: list[str] = []
        self.datanet_code: dict[str, int] = {}
        self.contributor_names: list[str] = []
        self.contributor_code: dict[str, int] = {}
        self.eligible_count: list[int] = []  # per datanet code
        self.changed: list[int] = []  # indices whose status changed, until the core takes them

    def _code(self, names: list[str], codes: dict[str, int], name: str) -> int:
        c = codes.get(name)
        if c is None:
            c = codes[name] = len(names)
            names.append(name)
            if names is self.datanet_names:
                self.eligible_count.append(0)
        return c

    def add(self, idx: int, datanet: str, contributor: str, tokens: np.ndarray, status: str) -> None:
        """Append contribution ``idx`` (== the number added so far)."""
        if idx != self.n:
            raise ValueError(f"contribution index {idx} out of order (expected {self.n})")
        if self.n == self.eligible.shape[0]:
            for name in ("eligible", "voted", "accepted", "datanet", "contributor", "weight"):
                a = getattr(self, name)
                b = np.zeros(2 * a.shape[0], dtype=a.dtype)
                b[:a.shape[0]] = a
                setattr(self, name, b)
        d = self._code(self.datanet_names, self.datanet_code, datanet)
        self.datanet[idx] = d
        self.contributor[idx] = self._code(self.contributor_names, self.contributor_code, contributor)
        self.weight[idx] = pool_weight(tokens, self.window)
        self.n += 1
        self.set_status(idx, status)

    def set_status(self, idx: int, status: str) -> None:
        self.changed.append(idx)  # the core resolves escrow for these (processors/escrow.py)
        self.accepted[idx] = status == "accepted"
        ok = status not in INELIGIBLE
        if bool(self.eligible[idx]) != ok:
            self.eligible[idx] = ok
            self.eligible_count[self.datanet[idx]] += 1 if ok else -1

    def mask(self) -> np.ndarray:
        """The eligible mask over every contribution (a view: no copy)."""
        return self.eligible[:self.n]

    def has_eligible(self, datanet: str) -> bool:
        c = self.datanet_code.get(datanet)
        return c is not None and self.eligible_count[c] > 0

    def validated_supply(self) -> dict[str, float]:
        """Contributor -> summed pool weight of their accepted contributions (one pass)."""
        n = self.n
        acc = self.accepted[:n]
        per = np.bincount(self.contributor[:n][acc], weights=self.weight[:n][acc].astype(np.float64),
                          minlength=len(self.contributor_names))
        return {self.contributor_names[c]: float(per[c]) for c in np.flatnonzero(per > 0)}

    def eligible_in(self, datanet: str) -> np.ndarray:
        """Eligible contribution indices of ``datanet``, ascending (one vectorized pass)."""
        return self._in(self.eligible, datanet)

    def accepted_in(self, datanet: str) -> np.ndarray:
        """Accepted contribution indices of ``datanet``, ascending (one vectorized pass)."""
        return self._in(self.accepted, datanet)

    def _in(self, column: np.ndarray, datanet: str) -> np.ndarray:
        c = self.datanet_code.get(datanet)
        if c is None:
            return np.zeros(0, dtype=np.int64)
        n = self.n
        return np.flatnonzero(column[:n] & (self.datanet[:n] == c))
