import hashlib
from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from poa_stream.processors.merkle import encode_entry, epoch_leaves, leaf_hash, node_hash, proof, root, verify, verify_audit_path


def entry(i: int) -> dict:
    return {"entry_id": f"e{i:04d}", "epoch": 3, "account": f"a{i % 3}", "role": "contributor",
            "source": "fee", "amount": 1000 + i, "ref_event_id": f"u{i}",
            "ts": datetime(2026, 1, 4, 0, 0, i % 60, tzinfo=timezone.utc)}


def brute_root(leaves):
    """Reference: RFC 6962 Merkle Tree Hash, written from the RFC's definition."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + brute_root(leaves[:k]) + brute_root(leaves[k:])).digest()


@given(st.integers(0, 70))
def test_root_matches_rfc6962_reference(n):
    leaves = [leaf_hash(encode_entry(entry(i))) for i in range(n)]
    assert root(leaves) == brute_root(leaves)


@given(st.integers(1, 70), st.data())
def test_every_leaf_has_a_valid_proof(n, data):
    leaves = [leaf_hash(encode_entry(entry(i))) for i in range(n)]
    i = data.draw(st.integers(0, n - 1))
    r = root(leaves)
    assert verify(leaves[i], proof(leaves, i), r)


def test_tampering_is_detected():
    entries = [entry(i) for i in range(9)]
    ids, leaves = epoch_leaves(entries)
    r = root(leaves)
    p = proof(leaves, 4)
    forged = dict(entries[4], amount=entries[4]["amount"] + 1)
    assert not verify(leaf_hash(encode_entry(forged)), p, r)
    assert not verify(leaves[4], p[:-1], r)
    assert not verify(leaves[4], [(("R" if s == "L" else "L"), h) for s, h in p], r)


def test_leaf_order_is_canonical():
    entries = [entry(i) for i in range(5)]
    assert epoch_leaves(entries) == epoch_leaves(list(reversed(entries)))
    with pytest.raises(IndexError):
        proof([], 0)
    assert node_hash(b"a", b"b") != node_hash(b"b", b"a")


@pytest.mark.parametrize("n", list(range(1, 34)) + [100, 257])
def test_rfc9162_audit_paths_verify_without_sides(n):
    """The sibling hashes alone (RFC 6962 audit path) verify with the RFC 9162 algorithm
    for every leaf index, and fail for a wrong index, size, sibling or root."""
    leaves = [leaf_hash(str(i).encode()) for i in range(n)]
    r = root(leaves)
    for i in range(n):
        path = [h for _, h in proof(leaves, i)]
        assert verify_audit_path(leaves[i], i, n, path, r)
        if n > 1:
            assert not verify_audit_path(leaves[i], (i + 1) % n, n, path, r)
            assert not verify_audit_path(leaves[i], i, n, path[:-1] + [b"\x00" * 32], r)
        assert not verify_audit_path(leaves[i], i, n, path, b"\x11" * 32)
    assert not verify_audit_path(leaves[0], n, n, [], r)
