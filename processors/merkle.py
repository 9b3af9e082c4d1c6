"""Per-epoch Merkle trees over ledger entries, with inclusion proofs.

Canonical encoding of one ledger entry (UTF-8, fields joined by ``\\x1f``):
``entry_id, epoch, account, role, source, amount, ref_event_id, ts_ms`` where
``ts_ms`` is the entry's time in integer milliseconds since the Unix epoch.
Leaves are ``sha256(0x00 || encoding)``, inner nodes ``sha256(0x01 || left || right)``
(RFC 6962 style: domain-separated, an odd subtree is split at the largest power of two
below its size, so nothing is duplicated). Leaves are ordered by ``entry_id``. The root
of an epoch with no entries is ``sha256(b"")``. A proof is the list of sibling hashes
from the leaf up, each tagged with the side it sits on.
"""
from __future__ import annotations

import hashlib
from datetime import datetime

SEP = "\x1f"


def encode_entry(entry: dict) -> bytes:
    ts = entry["ts"]
    ts_ms = int(round(ts.timestamp() * 1000)) if isinstance(ts, datetime) else int(ts)
    fields = (entry["entry_id"], entry["epoch"], entry["account"], entry["role"], entry["source"],
              entry["amount"], entry["ref_event_id"], ts_ms)
    return SEP.join(str(f) for f in fields).encode("utf-8")


def leaf_hash(encoded: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + encoded).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root(leaves: list[bytes]) -> bytes:
    """Merkle root of leaf hashes (in order)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def proof(leaves: list[bytes], index: int) -> list[tuple[str, bytes]]:
    """Siblings of ``leaves[index]`` from the bottom up: ("L" | "R", hash)."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} out of range 0..{len(leaves) - 1}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return proof(leaves[:k], index) + [("R", root(leaves[k:]))]
    return proof(leaves[k:], index - k) + [("L", root(leaves[:k]))]


def verify(leaf: bytes, path: list[tuple[str, bytes]], expected_root: bytes) -> bool:
    h = leaf
    for side, sibling in path:
        h = node_hash(sibling, h) if side == "L" else node_hash(h, sibling)
    return h == expected_root


def epoch_leaves(entries: list[dict]) -> tuple[list[str], list[bytes]]:
    """(entry ids, leaf hashes) of an epoch's entries, in canonical (entry_id) order."""
    ordered = sorted(entries, key=lambda e: e["entry_id"])
    return [e["entry_id"] for e in ordered], [leaf_hash(encode_entry(e)) for e in ordered]


def verify_audit_path(leaf: bytes, leaf_index: int, tree_size: int, path: list[bytes], expected_root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2 (RFC 6962's audit path): ``path`` holds the sibling hashes
    bottom-up, without sides; the sides follow from ``leaf_index`` and ``tree_size``."""
    if not 0 <= leaf_index < tree_size:
        return False
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root
