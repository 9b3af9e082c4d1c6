"""Token vocabulary: an open-addressing hash table from uint64 token hashes to dense
uint32 ids, in two numpy arrays (``vkeys`` uint64, ``vvals`` uint32 holding id + 1, 0 =
empty slot; capacity a power of two, linear probing from ``mix64(key)``). Ids count up
from 0 in first-seen order; ``UNK`` (0xFFFFFFFE) marks a token that was never added.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from poa_stream.attribution.text import mix64

UNK = np.uint32(0xFFFFFFFE)


@nb.njit(cache=True, nogil=True)
def vocab_ids(vkeys, vvals, tokens):
    """Ids of token hashes (UNK when absent). ``vvals`` holds id + 1, 0 = empty slot."""
    mask = np.uint64(vkeys.shape[0] - 1)
    out = np.empty(tokens.shape[0], dtype=np.uint32)
    for i in range(tokens.shape[0]):
        k = tokens[i]
        s = mix64(k) & mask
        while vvals[s] != 0 and vkeys[s] != k:
            s = (s + np.uint64(1)) & mask
        out[i] = vvals[s] - np.uint32(1) if vvals[s] != 0 else UNK
    return out


@nb.njit(cache=True, nogil=True)
def vocab_add(vkeys, vvals, tokens, next_id):
    """Ids of token hashes, new ones numbered from ``next_id``; -> (ids, next_id).

    The caller keeps the table at most half full (room for every token being new).
    """
    mask = np.uint64(vkeys.shape[0] - 1)
    out = np.empty(tokens.shape[0], dtype=np.uint32)
    for i in range(tokens.shape[0]):
        k = tokens[i]
        s = mix64(k) & mask
        while vvals[s] != 0 and vkeys[s] != k:
            s = (s + np.uint64(1)) & mask
        if vvals[s] == 0:
            vkeys[s] = k
            next_id += 1
            vvals[s] = np.uint32(next_id)
        out[i] = vvals[s] - np.uint32(1)
    return out, next_id


@nb.njit(cache=True, nogil=True)
def vocab_rehash(vkeys, vvals, cap):
    nk = np.zeros(cap, dtype=np.uint64)
    nv = np.zeros(cap, dtype=np.uint32)
    mask = np.uint64(cap - 1)
    for i in range(vkeys.shape[0]):
        if vvals[i] != 0:
            s = mix64(vkeys[i]) & mask
            while nv[s] != 0:
                s = (s + np.uint64(1)) & mask
            nk[s] = vkeys[i]
            nv[s] = vvals[i]
    return nk, nv
