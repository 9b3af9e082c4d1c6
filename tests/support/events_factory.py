"""Small builders of contract-v1 events for tests (raw JSON bytes)."""
import json

LEGAL_DE = ("Der Vertrag über das Grundstück bedarf der notariellen Beurkundung und wird erst mit "
            "der Eintragung im Grundbuch wirksam sofern die Parteien nichts anderes vereinbaren")
LEGAL_FR = ("La responsabilité contractuelle suppose un contrat valable une inexécution imputable "
            "au débiteur et un préjudice réparable subi par le créancier selon le code civil")
MEDICAL = ("Patients with persistent fever after antibiotic therapy should be evaluated for abscess "
           "formation drug resistance and non infectious causes before the regimen is changed")


def _ts(minute: int) -> str:
    return f"2026-01-01T{minute // 60:02d}:{minute % 60:02d}:00Z"


def raw(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def contribution(eid, cid, who, datanet, content, minute=0, **kw):
    return raw({"event_id": eid, "type": "contribution", "ts": _ts(minute), "contribution_id": cid,
                "contributor": who, "datanet": datanet, "kind": "dataset", "content": content, **kw})


def validation(eid, validator, cid, verdict="accept", minute=1, **kw):
    return raw({"event_id": eid, "type": "validation", "ts": _ts(minute), "validator": validator,
                "contribution_id": cid, "verdict": verdict, **kw})


def model(eid, mid, operator, datanets, base=(), method="pretrain", minute=2, **kw):
    return raw({"event_id": eid, "type": "model", "ts": _ts(minute), "model_id": mid,
                "operator": operator, "method": method, "base_models": list(base),
                "datanets": [{"datanet": d, "weight": 1.0} for d in datanets], **kw})


def usage(eid, rid, mid, fee, output, minute=3, **kw):
    return raw({"event_id": eid, "type": "usage", "ts": _ts(minute), "request_id": rid,
                "model_id": mid, "fee": fee, "output": output, **kw})


def scenario() -> list[tuple[str, bytes]]:
    """A small story touching every rule; (topic, raw) in production order."""
    C, V, M, U = "poa.contributions", "poa.validations", "poa.models", "poa.usage"
    return [
        (C, contribution("e1", "c1", "alice", "legal-de", LEGAL_DE, 0)),
        (C, contribution("e2", "c2", "bob", "legal-fr", LEGAL_FR, 1)),
        (C, contribution("e3", "c3", "mallory", "legal-de", LEGAL_DE.upper() + " !!", 2)),
        (C, contribution("e4", "c4", "carol", "medical", MEDICAL, 3)),
        (V, validation("e5", "val1", "c1", "accept", 4, stake=3_000_000)),
        (V, validation("e6", "val2", "c1", "accept", 4)),
        (V, validation("e7", "val2", "c2", "reject", 5)),
        (U, usage("e8", "r0", "m-ft", 500_000, "early: " + LEGAL_DE, 5)),  # waits for m-ft
        (M, model("e9", "m-ft", "op-ft", ["legal-fr"], base=["m-base"], method="finetune", minute=6)),
        (M, model("e10", "m-base", "op-base", ["legal-de"], minute=6)),
        (U, usage("e11", "r1", "m-base", 1_000_003, "Answer: " + LEGAL_DE + " thanks", 7)),
        (U, usage("e12", "r2", "m-base", 999, "nothing here matches any contributed text at all", 8)),
        (U, usage("e13", "r3", "m-base", 10_000, MEDICAL, 9)),  # medical is outside the lineage
        (U, usage("e11", "r1", "m-base", 1_000_003, "Answer: " + LEGAL_DE + " thanks", 7)),  # re-delivery
        (U, b'{"event_id": "bad1", "type": "usage", "fee": -3}'),
        (U, b"\x00\xffgarbage"),
        (U, b"\x00\xffgarbage"),  # re-delivered poison
        (C, validation("e14", "val3", "c4", "accept", 10)),  # wrong topic
    ]
