"""Inclusion proofs of ledger entries in an epoch's Merkle root (``poa proof`` / ``poa verify``).

A proof document (JSON, ``format`` ``poa-proof/2``, schema :data:`PROOF_SCHEMA`) holds the
epoch, its root as stored in the ``epochs`` table, the tree size (the epoch's entries), and
for each of the account's entries: the entry's fields (``ts_ms`` in integer
milliseconds), its leaf hash, ``leaf_index`` and the RFC 6962 audit path (sibling hashes
bottom-up, no sides: RFC 9162 section 2.1.3.2 derives them from index and size;
processors/merkle.py). Verification re-encodes each entry, recomputes its leaf and walks
the path to the document's root; only comparing that root with a *trusted* one (the
store's, or one published elsewhere: ``poa verify --root``) ties the proof to the ledger.
Version-1 documents (``path`` of ``[side, hash]`` pairs) are still verified.
"""
from __future__ import annotations

from poa_stream.processors.merkle import encode_entry, epoch_leaves, leaf_hash, proof, verify, verify_audit_path
from poa_stream.sinks.base import Sink

FIELDS = ("entry_id", "epoch", "account", "role", "source", "amount", "ref_event_id")
FORMAT = "poa-proof/2"
_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
PROOF_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "PoA Stream inclusion proof (poa-proof/2)",
    "type": "object",
    "required": ["format", "epoch", "account", "merkle_root", "tree_size", "proofs"],
    "properties": {
        "format": {"const": FORMAT},
        "epoch": {"type": "integer", "minimum": 0},
        "account": {"type": "string"},
        "merkle_root": _HEX64,
        "tree_size": {"type": "integer", "minimum": 1},
        "proofs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["entry", "leaf", "leaf_index", "audit_path"],
            "properties": {
                "entry": {"type": "object", "required": [*FIELDS, "ts_ms"], "properties": {
                    "entry_id": {"type": "string"}, "epoch": {"type": "integer"}, "account": {"type": "string"},
                    "role": {"type": "string"}, "source": {"type": "string"},
                    "amount": {"type": "integer", "description": "micro-units"},
                    "ref_event_id": {"type": "string"}, "ts_ms": {"type": "integer"}}},
                "leaf": _HEX64,
                "leaf_index": {"type": "integer", "minimum": 0},
                "audit_path": {"type": "array", "items": _HEX64}}}}},
}


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
                    "leaf": leaves[i].hex(), "leaf_index": i,
                    "audit_path": [h.hex() for _, h in proof(leaves, i)]})
    return {"format": FORMAT, "epoch": int(epoch), "account": account, "merkle_root": root_hex,
            "tree_size": len(leaves), "proofs": out}


def shape_problem(doc) -> str | None:
    """The first way ``doc`` does not have the shape of a proof (v2, or v1), or None."""
    def hex64(x) -> bool:
        return isinstance(x, str) and len(x) == 64 and all(c in "0123456789abcdef" for c in x)
    if not isinstance(doc, dict):
        return "a proof is a JSON object"
    v2 = doc.get("format") == FORMAT
    for k in ("epoch", "account", "merkle_root", "proofs") + (("tree_size",) if v2 else ()):
        if k not in doc:
            return f"missing field {k!r}"
    if not hex64(doc["merkle_root"]):
        return "merkle_root is not 64 lowercase hex digits"
    if not isinstance(doc["proofs"], list) or not doc["proofs"]:
        return "proofs must be a non-empty list"
    for n, p in enumerate(doc["proofs"]):
        if not isinstance(p, dict) or not isinstance(p.get("entry"), dict):
            return f"proofs[{n}]: needs an entry object"
        missing = [k for k in (*FIELDS, "ts_ms") if k not in p["entry"]]
        if missing:
            return f"proofs[{n}].entry: missing {', '.join(missing)}"
        if not isinstance(p["entry"]["amount"], int) or not isinstance(p["entry"]["ts_ms"], int):
            return f"proofs[{n}].entry: amount and ts_ms are integers"
        if not hex64(p.get("leaf")):
            return f"proofs[{n}]: leaf is not 64 lowercase hex digits"
        if v2:
            if not isinstance(p.get("leaf_index"), int) or not isinstance(p.get("audit_path"), list) \
                    or not all(hex64(h) for h in p["audit_path"]):
                return f"proofs[{n}]: needs leaf_index (integer) and audit_path (hex hashes)"
        elif not isinstance(p.get("path"), list) or not all(
                isinstance(x, list) and len(x) == 2 and x[0] in ("L", "R") and hex64(x[1]) for x in p["path"]):
            return f"proofs[{n}]: path must be [side, hash] pairs"
    return None


def verify_proof(doc: dict) -> list[str]:
    """Problems found in a proof document (empty: every entry is included in the root)."""
    problems = []
    root_b = bytes.fromhex(doc["merkle_root"])
    for p in doc["proofs"]:
        e = p["entry"]
        leaf = leaf_hash(encode_entry({**{k: e[k] for k in FIELDS}, "ts": e["ts_ms"]}))
        if leaf.hex() != p["leaf"]:
            problems.append(f"{e['entry_id']}: the entry's fields do not hash to its leaf")
        elif "audit_path" in p:
            if not verify_audit_path(leaf, p["leaf_index"], doc["tree_size"],
                                     [bytes.fromhex(h) for h in p["audit_path"]], root_b):
                problems.append(f"{e['entry_id']}: the audit path does not lead to the root")
        elif not verify(leaf, [(s, bytes.fromhex(h)) for s, h in p["path"]], root_b):
            problems.append(f"{e['entry_id']}: the path does not lead to the root")
        if e.get("account") != doc["account"] or e.get("epoch") != doc["epoch"]:
            problems.append(f"{e['entry_id']}: the entry is of {e.get('account')!r} in epoch {e.get('epoch')}, "
                            f"not of the proof's account and epoch")
    return problems
