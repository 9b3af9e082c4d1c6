"""Inclusion proofs of ledger entries in an epoch's Merkle root (``poa proof`` / ``poa verify``).

A proof document (JSON) holds the epoch, its root as stored in the ``epochs`` table,
and for each of the account's entries in that epoch: the entry's fields (``ts_ms`` in
integer milliseconds), its leaf hash and the sibling path (processors/merkle.py).
Verification needs nothing but the document: it re-encodes each entry, recomputes its
leaf and walks the path to the root. Checking that root against the store (or against
a root published elsewhere) is what ties the proof to the ledger.
"""
from __future__ import annotations

from processors.merkle import encode_entry, epoch_leaves, leaf_hash, proof, verify
from sinks.base import Sink

FIELDS = ("entry_id", "epoch", "account", "role", "source", "amount", "ref_event_id")


class AuditError(ValueError):
    pass


def stored_root(sink: Sink, epoch: int) -> str | None:
    return sink.scalar(f"SELECT any(merkle_root) FROM {sink.database}.epochs WHERE epoch = {int(epoch)} "
                       f"HAVING count() > 0")


def build_proof(sink: Sink, account: str, epoch: int) -> dict:
    root_hex = stored_root(sink, epoch)
    if root_hex is None:
        raise AuditError(f"epoch {epoch} is not closed (no root in the epochs table yet)")
    cols, rows = sink.query(
        f"SELECT entry_id, epoch, account, role, source, amount, ref_event_id, "
        f"toUnixTimestamp64Milli(ts) AS ts_ms FROM {sink.database}.reward_ledger WHERE epoch = {int(epoch)}")
    entries = [dict(zip(cols, r)) for r in rows]
    for e in entries:
        e["ts"] = e.pop("ts_ms")
    ids, leaves = epoch_leaves(entries)
    by_id = {e["entry_id"]: e for e in entries}
    mine = [i for i, eid in enumerate(ids) if by_id[eid]["account"] == account]
    if not mine:
        raise AuditError(f"account {account!r} has no ledger entries in epoch {epoch}")
    out = []
    for i in mine:
        e = by_id[ids[i]]
        out.append({"entry": {**{k: e[k] for k in FIELDS}, "ts_ms": e["ts"]},
                    "leaf": leaves[i].hex(),
                    "path": [[side, h.hex()] for side, h in proof(leaves, i)]})
    return {"epoch": int(epoch), "account": account, "merkle_root": root_hex, "proofs": out}


def verify_proof(doc: dict) -> list[str]:
    """Problems found in a proof document (empty: every entry is included in the root)."""
    problems = []
    root_b = bytes.fromhex(doc["merkle_root"])
    for p in doc["proofs"]:
        e = p["entry"]
        leaf = leaf_hash(encode_entry({**{k: e[k] for k in FIELDS}, "ts": e["ts_ms"]}))
        if leaf.hex() != p["leaf"]:
            problems.append(f"{e['entry_id']}: the entry's fields do not hash to its leaf")
        elif not verify(leaf, [(s, bytes.fromhex(h)) for s, h in p["path"]], root_b):
            problems.append(f"{e['entry_id']}: the path does not lead to the root")
    return problems
