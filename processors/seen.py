"""The ids the core has seen, each with an optional 64-bit value, in bounded memory.

"Seen before?" must stay exact for the whole history (a re-delivered event changes
nothing, a request is billed once), but a Python set of every id costs ~100-200 bytes per
id. :class:`SeenIds` keeps the recent ids exactly in a dict and compacts older ones into
sorted numpy arrays of 128-bit BLAKE2b hashes plus the value: 24 bytes per id (about 240
MB per ten million ids, instead of 1.5-2 GB).

Exactness: two different ids are confused only if their 128-bit hashes collide; over 10^12
ids the probability of any collision is below 10^-14 (birthday bound n^2 / 2^129), far
below the rate of undetected hardware faults: we treat it as exact. Lookups cost one
hash and one binary search; compaction re-sorts (O(n log n)) once the recent part reaches
an eighth of the compacted one (at least ``min_recent`` ids): amortised O(log n) per id.

Values: a ``uint64`` per id (the core stores a payload digest; ``NONE`` means no value).
"""
from __future__ import annotations

import hashlib

import numpy as np

NONE = np.uint64(0xFFFFFFFFFFFFFFFF)  # "no value" (a digest equal to it is stored as NONE - 1)


def _h(key: str) -> tuple[int, int]:
    b = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(b[:8], "little"), int.from_bytes(b[8:], "little")


class SeenIds:
    def __init__(self, min_recent: int = 100_000):
        self.min_recent = min_recent
        self.recent: dict[str, int | None] = {}
        self._hi = np.zeros(0, dtype=np.uint64)
        self._lo = np.zeros(0, dtype=np.uint64)
        self._val = np.zeros(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.recent) + int(self._hi.shape[0])

    def _find(self, key: str) -> int:
        """Index of ``key`` in the compacted arrays, or -1."""
        if self._hi.shape[0] == 0:
            return -1
        hi, lo = _h(key)
        i = int(np.searchsorted(self._hi, np.uint64(hi)))
        n = self._hi.shape[0]
        while i < n and int(self._hi[i]) == hi:
            if int(self._lo[i]) == lo:
                return i
            i += 1
        return -1

    def __contains__(self, key: str) -> bool:
        return key in self.recent or self._find(key) >= 0

    def get(self, key: str) -> int | None:
        """The value stored with ``key`` (None: unseen, or seen without a value)."""
        if key in self.recent:
            return self.recent[key]
        i = self._find(key)
        if i < 0 or self._val[i] == NONE:
            return None
        return int(self._val[i])

    def add(self, key: str, value: int | None = None) -> None:
        """Mark ``key`` seen; a value, once set, is kept (the first one stands)."""
        if self.recent.get(key) is not None:
            return
        if key in self.recent:
            self.recent[key] = value
            return
        i = self._find(key)
        if i < 0:
            self.recent[key] = value
        elif value is not None and self._val[i] == NONE:  # compacted without a value
            self._val[i] = np.uint64(min(value, int(NONE) - 1))

    def compact(self, keep=()) -> bool:
        """Move the recent ids (but those in ``keep``) into the sorted arrays when due."""
        if len(self.recent) < max(self.min_recent, self._hi.shape[0] // 8):
            return False
        moving = [k for k in self.recent if k not in keep]
        if not moving:
            return False
        hs = [_h(k) for k in moving]
        vals = [NONE if (v := self.recent[k]) is None else np.uint64(min(v, int(NONE) - 1)) for k in moving]
        hi = np.concatenate([self._hi, np.fromiter((a for a, _ in hs), dtype=np.uint64, count=len(hs))])
        lo = np.concatenate([self._lo, np.fromiter((b for _, b in hs), dtype=np.uint64, count=len(hs))])
        val = np.concatenate([self._val, np.asarray(vals, dtype=np.uint64)])
        order = np.lexsort((lo, hi))
        self._hi, self._lo, self._val = hi[order], lo[order], val[order]
        self.recent = {k: self.recent[k] for k in self.recent if k in keep}
        return True

    def without(self, keys) -> "SeenIds":
        """A copy without ``keys`` (which must all be recent: compaction keeps them so)."""
        out = SeenIds(self.min_recent)
        out._hi, out._lo, out._val = self._hi, self._lo, self._val
        out.recent = {k: v for k, v in self.recent.items() if k not in keys}
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of the compacted arrays (the recent dict: ~150 bytes per id on top)."""
        return self._hi.nbytes + self._lo.nbytes + self._val.nbytes
