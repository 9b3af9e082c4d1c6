"""Text fingerprints: Unicode normalization, word tokenization, 64-bit token hashes.

Contract:
- ``normalize(text)``: NFKC, casefold, every Unicode punctuation/symbol/separator/control
  character mapped to a space. Letters with accents or umlauts are kept
  ("Verträge" -> "verträge"), so German, French and English tokenize on words.
- ``token_hashes(text)``: uint64 array, one FNV-1a 64-bit hash per word of the
  normalized text (a word = a maximal run of bytes that are ASCII alphanumerics or
  part of a non-ASCII UTF-8 sequence). Stable across processes and numba's cache:
  it never uses Python's ``hash()``.
- ``content_hash(text)``: 64-bit hash of the normalized word sequence (exact duplicates
  up to case, punctuation and whitespace share it).
"""
from __future__ import annotations

import sys
import unicodedata

import numba as nb
import numpy as np

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


def _build_table() -> dict[int, int]:
    table = {}
    for cp in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        if cat[0] in "PSZC" and cp not in (0x20,):
            table[cp] = 0x20
    return table


_TABLE: dict[int, int] | None = None


def normalize(text: str) -> str:
    global _TABLE
    if _TABLE is None:
        _TABLE = _build_table()
    return unicodedata.normalize("NFKC", text).casefold().translate(_TABLE)


@nb.njit(cache=True, nogil=True)
def hash_words(buf: np.ndarray) -> np.ndarray:
    """FNV-1a 64 of each word in a UTF-8 byte buffer (uint8 array) -> uint64 array."""
    n = buf.shape[0]
    out = np.empty(n // 2 + 1, dtype=np.uint64)
    k = 0
    h = np.uint64(0)
    inword = False
    for i in range(n):
        b = buf[i]
        word = (b >= 0x80) or (48 <= b <= 57) or (97 <= b <= 122) or (65 <= b <= 90)
        if word:
            if not inword:
                h = np.uint64(0xCBF29CE484222325)
                inword = True
            h = (h ^ np.uint64(b)) * np.uint64(0x100000001B3)
        elif inword:
            out[k] = h
            k += 1
            inword = False
    if inword:
        out[k] = h
        k += 1
    return out[:k].copy()


@nb.njit(cache=True, nogil=True)
def mix64(x: np.uint64) -> np.uint64:
    """splitmix64 finalizer: a bijective 64-bit mixer."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@nb.njit(cache=True, nogil=True)
def sequence_hash(hashes: np.ndarray) -> np.uint64:
    """Order-sensitive 64-bit hash of a token-hash sequence."""
    h = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(hashes.shape[0])
    for i in range(hashes.shape[0]):
        h = mix64(h ^ hashes[i]) + np.uint64(i)
    return mix64(h)


def token_hashes(text: str) -> np.ndarray:
    buf = np.frombuffer(normalize(text).encode("utf-8"), dtype=np.uint8)
    return hash_words(buf)


def content_hash(text: str) -> str:
    """Hex 64-bit hash of the normalized word sequence (the exact-duplicate key)."""
    return f"{int(sequence_hash(token_hashes(text))):016x}"
