"""Text fingerprints: Unicode normalization, word tokenization, 64-bit token hashes.

Contract:
- ``normalize(text)``: NFKC, casefold, every Unicode punctuation/symbol/separator/control
  character (general category P*, S*, Z*, C*, unassigned included) mapped to a space.
  Letters with accents or umlauts are kept ("Verträge" -> "verträge"); apostrophes
  split words ("l'homme" -> "l homme", "don't" -> "don t"), so German, French and
  English tokenize on words the same way a search engine's simple analyzer does.
- ``token_hashes(text)``: uint64 array, one FNV-1a 64-bit hash of the UTF-8 bytes of
  each word of ``normalize(text)`` (a word = a maximal run of non-separator characters).
  Stable across processes and numba's cache: it never uses Python's ``hash()``.
  Equal to ``hash_words(normalize(text).encode())``, but computed without building the
  normalized string: ASCII text goes straight to the kernel (which lower-cases A-Z),
  other text gets NFKC in C, then case folding and the separator test in the kernel,
  through a per-code-point class table (and the list of code points that casefold
  changes) filled lazily one Unicode plane (65,536 code points, ~30 ms) at a time, so
  the first call costs milliseconds, not a walk over all of Unicode. (Python's casefold
  is per character, so folding each code point of the NFKC text is exact.)
- ``token_hashes_batch(texts)``: the same for many texts -> (flat hashes, offsets) with
  ``flat[offsets[i]:offsets[i+1]]`` the hashes of ``texts[i]``.
- ``content_hash(text)``: 64-bit hash of the normalized word sequence (exact duplicates
  up to case, punctuation and whitespace share it).
"""
from __future__ import annotations

import unicodedata

import numba as nb
import numpy as np

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)

_N_CP = 0x110000
# class of each code point: 0 = not computed yet, 1 = word character, 2 = separator,
# 3 = changed by casefold: replaced by _FOLD_POOL[_FOLD_OFF[k]:_FOLD_OFF[k + 1]] where
# _FOLD_CP[k] == cp (UTF-8 of its casefold with separators as spaces)
_CLASS = np.zeros(_N_CP, dtype=np.uint8)
_PLANE_DONE = np.zeros(17, dtype=np.bool_)
_FOLDS: dict[int, bytes] = {}
_FOLD_CP = np.zeros(0, dtype=np.int64)
_FOLD_OFF = np.zeros(1, dtype=np.int64)
_FOLD_POOL = np.zeros(0, dtype=np.uint8)


def _is_sep(cp: int) -> bool:
    return unicodedata.category(chr(cp))[0] in "PSZC"


def _build_plane(plane: int) -> None:
    """Classify one plane (65,536 code points, ~30 ms) and record its case foldings."""
    global _FOLD_CP, _FOLD_OFF, _FOLD_POOL
    base = plane << 16
    cls = bytearray(0x10000)
    for c in range(base, base + 0x10000):
        ch = chr(c)
        folded = ch.casefold()
        if folded != ch:
            cls[c - base] = 3
            _FOLDS[c] = folded.translate(_TABLE).encode("utf-8", "surrogatepass")
        else:
            cls[c - base] = 2 if unicodedata.category(ch)[0] in "PSZC" else 1
    _CLASS[base:base + 0x10000] = np.frombuffer(bytes(cls), dtype=np.uint8)
    cps = sorted(_FOLDS)
    _FOLD_CP = np.asarray(cps, dtype=np.int64)
    _FOLD_OFF = np.cumsum([0] + [len(_FOLDS[c]) for c in cps]).astype(np.int64)
    _FOLD_POOL = np.frombuffer(b"".join(_FOLDS[c] for c in cps), dtype=np.uint8).copy()
    _PLANE_DONE[plane] = True


class _SepTable(dict):
    """``str.translate`` table filled on demand: separators -> space, others -> themselves."""

    def __missing__(self, cp: int) -> int:
        v = 0x20 if _is_sep(cp) else cp
        self[cp] = v
        return v


_TABLE = _SepTable()


def normalize(text: str) -> str:
    """NFKC + casefold + every P/S/Z/C character replaced by a space."""
    return unicodedata.normalize("NFKC", text).casefold().translate(_TABLE)


@nb.njit(cache=True, nogil=True)
def hash_words(buf: np.ndarray) -> np.ndarray:
    """FNV-1a 64 of each word of an already normalized UTF-8 buffer (uint8) -> uint64.

    A word is a maximal run of bytes that are ASCII alphanumerics or >= 0x80.
    """
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
def tokenize_utf8(buf: np.ndarray, cls: np.ndarray, fold_cp: np.ndarray,
                  fold_off: np.ndarray, fold_pool: np.ndarray):
    """Word hashes of NFKC-normalized UTF-8 ``buf``; byte 0 separates documents.

    Case folding happens here: ASCII A-Z are lower-cased, and a code point of class 3 is
    replaced by its casefold bytes from the pool (a space in them ends a word). Returns
    (hashes uint64, offsets int64[n_docs + 1], missing_plane int). When a code point's
    class is not computed yet (``cls[cp] == 0``) it stops early and returns that code
    point's plane (>= 0); the caller fills the plane and calls again. Otherwise
    ``missing_plane == -1``. Malformed UTF-8 bytes count as separators.
    """
    n = buf.shape[0]
    ndocs = 1
    for i in range(n):
        if buf[i] == 0:
            ndocs += 1
    out = np.empty(n // 2 + 1, dtype=np.uint64)
    offs = np.zeros(ndocs + 1, dtype=np.int64)
    k = 0
    nd = 0
    h = np.uint64(0)
    inword = False
    i = 0
    while i < n:
        b = np.int64(buf[i])
        ln = 1
        if b < 0x80:
            if b == 0:
                if inword:
                    out[k] = h
                    k += 1
                    inword = False
                nd += 1
                offs[nd] = k
                i += 1
                continue
            if 65 <= b <= 90:
                b += 32
            word = (48 <= b <= 57) or (97 <= b <= 122)
        else:
            if b >= 0xF0:
                ln, cp = 4, b & 0x07
            elif b >= 0xE0:
                ln, cp = 3, b & 0x0F
            elif b >= 0xC0:
                ln, cp = 2, b & 0x1F
            else:
                ln, cp = 1, np.int64(-1)
            if i + ln > n:
                ln, cp = 1, np.int64(-1)
            for j in range(1, ln):
                cp = (cp << 6) | (np.int64(buf[i + j]) & 0x3F)
            if cp < 0 or cp >= cls.shape[0]:
                word = False
            else:
                c = cls[cp]
                if c == 0:
                    return out[:0].copy(), offs[:1].copy(), cp >> 16
                if c == 3:
                    k_ = np.searchsorted(fold_cp, cp)
                    for j in range(fold_off[k_], fold_off[k_ + 1]):
                        fb = fold_pool[j]
                        if fb == 0x20:
                            if inword:
                                out[k] = h
                                k += 1
                                inword = False
                        else:
                            if not inword:
                                h = np.uint64(0xCBF29CE484222325)
                                inword = True
                            h = (h ^ np.uint64(fb)) * np.uint64(0x100000001B3)
                    i += ln
                    continue
                word = c == 1
        if word:
            if not inword:
                h = np.uint64(0xCBF29CE484222325)
                inword = True
            if ln == 1:
                h = (h ^ np.uint64(b)) * np.uint64(0x100000001B3)
            else:
                for j in range(ln):
                    h = (h ^ np.uint64(buf[i + j])) * np.uint64(0x100000001B3)
        elif inword:
            out[k] = h
            k += 1
            inword = False
        i += ln
    if inword:
        out[k] = h
        k += 1
    offs[nd + 1] = k
    return out[:k].copy(), offs, np.int64(-1)


def _prepare(text: str) -> str:
    if "\0" in text:
        text = text.replace("\0", " ")
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text)


def _tokenize(joined: str) -> tuple[np.ndarray, np.ndarray]:
    buf = np.frombuffer(joined.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    while True:
        out, offs, plane = tokenize_utf8(buf, _CLASS, _FOLD_CP, _FOLD_OFF, _FOLD_POOL)
        if plane < 0:
            return out, offs
        _build_plane(int(plane))


def token_hashes(text: str) -> np.ndarray:
    """One FNV-1a 64 hash per word of ``normalize(text)`` (uint64 array)."""
    return _tokenize(_prepare(text))[0]


def token_hashes_batch(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token hashes of many texts: (flat uint64, offsets int64[len(texts) + 1])."""
    if not texts:
        return np.zeros(0, dtype=np.uint64), np.zeros(1, dtype=np.int64)
    return _tokenize("\0".join([_prepare(t) for t in texts]))


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


def content_hash(text: str) -> str:
    """Hex 64-bit hash of the normalized word sequence (the exact-duplicate key)."""
    return f"{int(sequence_hash(token_hashes(text))):016x}"
