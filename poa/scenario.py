"""Seeded scenario generator: a realistic, adversarial PoA event log plus its ground truth.

Contract:
- ``generate(seed=7, scale=1.0, start_ts="2026-01-01T00:00:00Z") -> Scenario``. ``records`` is
  ``[(topic, raw_line)]`` in production order (topics ``poa.contributions``, ``poa.validations``,
  ``poa.models``, ``poa.usage``); each raw line is compact sorted-key JSON (``ensure_ascii=False``) of
  event contract v1 (/work/shared/DESIGN.md) with a unique ``event_id`` ("ev-000123"), ``type`` and
  ``ts`` (RFC 3339 UTC, milliseconds, 'Z'). Money is integer micro-units. ``truth`` is JSON-serialisable.
- ``write(scenario, out_dir) -> (events.jsonl, truth.json)``: one raw line per record, in order.
- Same seed and scale => byte-identical records in any process (only ``numpy.random.default_rng(seed)``
  and ``random.Random(seed)``; no set order reaches the output; no network). Event time spans 3 days.
- ``ts`` never decreases in production order except deliberately: re-deliveries (the same raw line
  again, same event_id), ``late`` usage events and malformed records. Contributions precede the
  validations and usages referencing them; models precede their usages and derived models.
- scale=1.0 (~3.4k records): 30 honest contributors (en/de/fr) on 4 datanets; 5 spammers (exact and
  lightly edited re-uploads, low-quality text); a 12-account farm uploading near-identical annotations
  within seconds; validators 6 honest (~92%), 3 lazy (coin flips), 3 colluding; 9 models with lineage;
  ~40% usage events copying 10-60 word spans of honest contributions in the model's lineage; 30
  malformed records (exactly one ~1.1 MiB); 10 re-deliveries; 4 late events. ``scale`` multiplies counts.
- truth: ``accounts`` (role), ``contributions`` (class honest/exact_dup/near_dup/low_quality/farm,
  ``original_of``, ``jaccard_to_original``, ``duplicate_of`` = earliest earlier contribution with the
  same words or word-5-gram Jaccard >= 0.8), ``validators``, ``models`` (``ancestors``,
  ``lineage_datanets``), ``usage`` (per request_id ``contribution_ids`` and ``copied`` with char offsets
  ``start:end`` into that content; ``copied_out_of_lineage`` must NOT be attributed), ``malformed``
  (record index, topic, reason category), ``redelivered_event_ids``, ``redeliveries``, ``late``, ``counts``.
  Words are ``[^\\W_]+`` runs of casefolded text, as in ``attribution.text``.
"""
from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

TOPIC = {"contribution": "poa.contributions", "validation": "poa.validations",
         "model": "poa.models", "usage": "poa.usage"}
PRIO = {"model": 0, "contribution": 1, "validation": 2, "usage": 3}
HOUR, DAY, MICRO = 3_600_000, 86_400_000, 1_000_000
SPAN_MS = 3 * DAY  # event time covered by a scenario
K, DUP_J, SPAN_MIN = 5, 0.8, 8
_WORD = re.compile(r"[^\W_]+")
_w = lambda s: s.split("|")  # noqa: E731

# datanet -> (language, nouns, adjectives, verbs, sentence templates); lists are "|"-separated
LANG = {dn: (lang, *map(_w, parts)) for dn, lang, *parts in [
    ("legal-de", "de", "der Kaufvertrag|die Haftung|das Grundstück|die Käuferin|der Verkäufer|das Landgericht|"
     "die Klage|der Schadensersatz|die Kündigung|die Mieterin|die Bürgschaft|das Erbrecht|die Frist|der Anspruch|"
     "das Eigentum|die Gewährleistung|die Gläubigerin|die Übergabe|die Vollmacht|das Urteil|der Rücktritt|"
     "die Grundschuld|die Beurkundung|das Vorkaufsrecht|die Mängelrüge|die Abtretung|die Verjährung|die Hypothek|"
     "die Räumung",
     "wirksam|nichtig|anfechtbar|schriftlich|fällig|zulässig|unbegründet|verjährt|gültig|formbedürftig|"
     "übertragbar|vorläufig|rechtskräftig|sittenwidrig|schwebend unwirksam",
     "begründet|regelt|umfasst|betrifft|ersetzt|verdrängt|beschränkt|sichert|berührt|ergänzt|erfasst",
     "{N} ist gemäß § {num} BGB {A}.|Nach herrschender Meinung {V} {N} auch {N}.|"
     "Verträge über Grundstücke sind {A}, wenn {N} fehlt.|Im Streitfall {V} {N} zugleich {N}.|"
     "Die Parteien vereinbaren, dass {N} {A} bleibt.|Ob {N} {A} ist, entscheidet {N}.|"
     "{N} {V} {N} nur, soweit {N} {A} ist."),
    ("legal-fr", "fr", "le contrat|la responsabilité contractuelle|le bailleur|la créance|le préjudice|"
     "la clause pénale|le débiteur|la cour d'appel|le tribunal judiciaire|la résiliation|le vendeur|l'acquéreur|"
     "la nullité|le notaire|la garantie des vices cachés|le délai de préavis|la succession|l'indemnité|"
     "le mandataire|la prescription|le cautionnement|la servitude|le bail commercial|la société|l'héritière|"
     "la mise en demeure|le créancier",
     "valable|exigible|opposable|résiliable|solidaire|irrévocable|contestable|applicable|inopposable|révocable|"
     "imprescriptible|transmissible|indivisible|licite|illicite",
     "engage|garantit|exclut|limite|suspend|transfère|impose|écarte|confirme|régit|affecte|prime sur",
     "Selon l'article {num} du Code civil, {N} {V} {N}.|{N} est {A} lorsque {N} {V} {N}.|"
     "La jurisprudence admet que {N} {V} {N}.|En cas de litige, {N} {V} {N}.|"
     "Il résulte des faits que {N} demeure {A}.|Par exception, {N} reste {A} malgré {N}."),
    ("medical-en", "en", "the patient|the dose|the infusion|the biopsy|the lesion|the antibody titre|the cohort|"
     "the trial arm|the fever|insulin resistance|the tumour margin|the vaccine|the clinician|the enzyme level|"
     "the therapy|the syndrome|the coronary artery|the infection|the MRI scan|the diagnosis|the relapse rate|"
     "the platelet count|the protocol|the renal function|the receptor|the pathogen|the sedation|blood pressure",
     "acute|chronic|benign|systemic|elevated|mild|severe|sterile|viral|randomised|adverse|clinical|transient|"
     "dose-dependent|stable",
     "reduces|indicates|requires|precedes|suppresses|triggers|confirms|improves|limits|affects|masks|predicts|"
     "worsens|normalises|accompanies",
     "{N} {V} {N} in {A} cases.|In a {A} presentation, {N} {V} {N}.|"
     "Clinicians observed that {N} {V} {N} within {num} hours.|A dose of {num} mg {V} {N}.|"
     "When {N} is {A}, {N} usually {V} {N}.|{N} remained {A} after {num} days, so {N} was reviewed."),
    ("code-en", "en", "the buffer|the worker thread|the socket|the parser|the compiler pass|the LRU cache|"
     "the iterator|the closure|the mutex|the schema|the HTTP endpoint|the raw pointer|the allocator|the runtime|"
     "the lexer|the job queue|the access token|the module|the scheduler|the decorator|the generator|"
     "the plugin registry|the checksum|the payload|the callback|the call stack|the event loop|"
     "the connection pool|the config loader",
     "async|immutable|recursive|nullable|generic|lazy|atomic|mutable|static|concurrent|deprecated|typed|"
     "idempotent|sparse|blocking",
     "returns|allocates|parses|locks|serialises|yields|caches|validates|wraps|flushes|emits|resolves|spawns|"
     "clones",
     "{N} {V} {N} before {N} is {A}.|Make {N} {A} so that {N} never {V} {N}.|"
     "If {N} is {A}, call `{id}()` before {N} {V} {N}.|In version {num}, {N} {V} {N} on every request.|"
     "Because {N} is {A}, {N} {V} {N}.|A {A} design keeps {N} out of {N}."),
]}
KINDS = ("dataset", "annotation", "knowledge", "feedback")
LICENSES = ("CC-BY-4.0", "CC-BY-SA-4.0", "CC0-1.0", "MIT", "Apache-2.0")
SPAM = _w("buy now|click here|best price|free money|kaufen sie jetzt|achetez maintenant|limited offer|act fast")
PRODUCTS = _w("phone case|smart watch|protein powder|crypto course|diet tea|vpn deal|sneakers|gaming chair")
MODELS = [  # model_id, method, base_models, datanets, inherit, operator index, hour of event time
    ("m-eu-legal-base", "pretrain", [], [("legal-de", 0.6), ("legal-fr", 0.4)], None, 0, 0.01),
    ("m-med-base", "pretrain", [], [("medical-en", 1.0)], None, 1, 0.02),
    ("m-code-base", "pretrain", [], [("code-en", 1.0)], None, 2, 0.03),
    ("m-legal-de-ft", "finetune", ["m-eu-legal-base"], [("legal-de", 1.0)], 0.3, 0, 6),
    ("m-legal-fr-lora", "lora", ["m-eu-legal-base"], [("legal-fr", 1.0)], 0.4, 3, 9),
    ("m-med-ft", "finetune", ["m-med-base"], [("medical-en", 1.0)], 0.25, 1, 12),
    ("m-code-lora", "lora", ["m-code-base"], [("code-en", 1.0)], 0.5, 2, 20),
    ("m-med-distill", "distill", ["m-med-ft"], [("medical-en", 0.2)], 0.6, 3, 30),
    ("m-legal-merge", "merge", ["m-legal-de-ft", "m-legal-fr-lora"], [], 0.5, 0, 44),
]
MODEL_W = {"m-eu-legal-base": 1, "m-med-base": 1, "m-code-base": 1.5, "m-legal-de-ft": 2, "m-legal-fr-lora": 1.5,
           "m-med-ft": 2, "m-code-lora": 2, "m-med-distill": 2, "m-legal-merge": 1.5}
MALFORMED = {"invalid_json": 5, "missing_field": 5, "negative_fee": 3, "fractional_fee": 3, "unknown_type": 3,
             "bad_timestamp": 4, "oversize": 1, "wrong_type": 6}
REQUIRED = {"contribution": ["contribution_id", "contributor", "datanet", "kind", "content"],
            "validation": ["validator", "contribution_id", "verdict"],
            "model": ["model_id", "operator", "method", "datanets"],
            "usage": ["request_id", "model_id", "fee", "output"]}


@dataclass(frozen=True)
class Scenario:
    records: list[tuple[str, str]]
    truth: dict


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def shingles(text: str, k: int = K) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i:i + k]) for i in range(max(1, len(w) - k + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def canonical(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _sentence(R: random.Random, dn: str) -> str:
    _, N, A, V, T = LANG[dn]
    fill = {"N": lambda: R.choice(N), "A": lambda: R.choice(A), "V": lambda: R.choice(V),
            "num": lambda: str(R.randint(2, 950)), "id": lambda: f"{R.choice(V)}_{R.choice(N).split()[-1].lower()}"}
    s = re.sub(r"\{(\w+)\}", lambda m: fill[m.group(1)](), R.choice(T))
    return s[0].upper() + s[1:]


def _text(R: random.Random, dn: str, n_words: int) -> str:
    out, n = [], 0
    while n < n_words:
        out.append(_sentence(R, dn))
        n += len(words(out[-1]))
    return " ".join(out)


def _near(R: random.Random, text: str, vocab: list[str], n_edits: int, lo: float = 0.85) -> tuple[str, float]:
    base = shingles(text)
    for attempt in range(40):
        w = text.split(" ")
        for _ in range(max(1, n_edits - attempt // 4)):  # replace or insert a word
            i = R.randrange(len(w))
            w[i:i + (R.random() < 0.5)] = [R.choice(vocab)]
        t = " ".join(w)
        j = jaccard(base, shingles(t))
        if lo <= j < 1.0 and words(t) != words(text):
            return t, j
    raise AssertionError("could not make a near-duplicate")  # pragma: no cover


def _span(R: random.Random, text: str) -> tuple[int, int, int]:
    ms = list(_WORD.finditer(text))
    n = R.randint(10, min(60, len(ms)))
    i = R.randrange(len(ms) - n + 1)
    return ms[i].start(), ms[i + n - 1].end(), n


def generate(seed: int = 7, scale: float = 1.0, start_ts: str = "2026-01-01T00:00:00Z") -> Scenario:
    R, rng = random.Random(seed), np.random.default_rng(seed)
    sc = lambda x, lo=1: max(lo, int(round(x * scale)))  # noqa: E731
    t0 = datetime.fromisoformat(start_ts.replace("Z", "+00:00")).astimezone(timezone.utc)
    fmt = lambda ms: (t0 + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # noqa: E731
    dnames = list(LANG)
    roles: dict[str, str] = {}

    def accounts(k: int, role: str) -> list[str]:
        out: list[str] = []
        while len(out) < k:
            a = "0x" + "".join(R.choice("0123456789abcdef") for _ in range(10))
            if a not in roles:
                roles[a] = role
                out.append(a)
        return out

    honest, spammers, farm = accounts(sc(30, 4), "honest"), accounts(sc(5, 2), "spammer"), accounts(sc(12, 3), "farm")
    vals = accounts(6, "validator_honest") + accounts(3, "validator_lazy") + accounts(3, "validator_colluding")
    ops = accounts(4, "operator")
    events: list[list] = []  # [ts_ms, prio, seq, type, obj]
    emit = lambda ts, obj: events.append([int(ts), PRIO[obj["type"]], len(events), obj["type"], obj])  # noqa: E731

    mts, lineage, ancestors = {}, {}, {}
    for mid, method, bases, dns, inherit, op, hour in MODELS:
        obj = {"type": "model", "model_id": mid, "operator": ops[op], "method": method,
               "datanets": [{"datanet": d, "weight": float(w)} for d, w in dns]}
        obj |= ({"base_models": bases} if bases else {}) | ({} if inherit is None else {"inherit": inherit})
        mts[mid] = int(hour * HOUR) + R.randint(0, 59_999)
        lineage[mid] = sorted({d for d, _ in dns}.union(*(lineage[b] for b in bases)))
        ancestors[mid] = sorted(set(bases).union(*(ancestors[b] for b in bases)))
        emit(mts[mid], obj)

    contribs: list[dict] = []

    def contribute(ts, who, dn, cls, text, kind="dataset", original=None, j=None, lic=None, stake=None):
        c = {"cid": f"c-{len(contribs) + 1:05d}", "ts": int(ts), "who": who, "dn": dn, "cls": cls, "text": text,
             "kind": kind, "original_of": original, "jaccard": None if j is None else round(j, 4)}
        contribs.append(c)
        emit(ts, {"type": "contribution", "contribution_id": c["cid"], "contributor": who, "datanet": dn,
                  "kind": kind, "content": text}
             | ({"license": lic} if lic else {}) | ({"stake": stake} if stake else {}))
        return c

    home = {a: R.sample(dnames, R.choice([1, 1, 2])) for a in honest}
    for _ in range(sc(300, 20)):
        a = R.choice(honest)
        dn = R.choice(home[a])
        nw = int(np.clip(rng.lognormal(math.log(170), 0.5), 60, 380))
        kind = R.choices(KINDS, weights=(4, 2, 3, 1) if dn != "medical-en" else (3, 3, 1, 2))[0]
        contribute(rng.uniform(0, 0.9 * SPAN_MS), a, dn, "honest", _text(R, dn, nw), kind,
                   lic=R.choice(LICENSES[3:] if dn == "code-en" else LICENSES[:3]) if R.random() < 0.6 else None,
                   stake=int(rng.integers(1, 21)) * MICRO if R.random() < 0.4 else None)
    originals = [c for c in contribs if c["cls"] == "honest"]
    late_ts = lambda c: min(SPAN_MS - HOUR, c["ts"] + int(rng.uniform(10 * 60_000, DAY)))  # noqa: E731
    for _ in range(sc(20)):
        o = R.choice(originals)
        contribute(late_ts(o), R.choice(spammers), o["dn"], "exact_dup", o["text"], original=o["cid"], j=1.0,
                   lic=R.choice(LICENSES[:3]) if R.random() < 0.5 else None)
    long_originals = [c for c in originals if len(words(c["text"])) >= 120] or originals
    for _ in range(sc(20)):
        o = R.choice(long_originals)
        t, j = _near(R, o["text"], LANG[o["dn"]][2], 1 + len(words(o["text"])) // 120)
        contribute(late_ts(o), R.choice(spammers), o["dn"], "near_dup", t, original=o["cid"], j=j)
    all_words = sorted({w for v in LANG.values() for lst in v[1:4] for s in lst for w in words(s)})
    for i in range(sc(30, 3)):
        style = ("repetitive", "templated", "word_salad")[i % 3]
        if style == "repetitive":
            text = " ".join([f"{SPAM[i // 3 % len(SPAM)]} {R.choice(['deal', 'promo', 'win', 'gratis'])}{1000 + i}!"]
                            * R.randint(15, 50))
        elif style == "templated":
            text = " ".join(f"Great {p}! {R.choice(['Amazing', 'Top', 'Super', 'Best'])} quality, "
                            f"{R.choice(['low', 'crazy', 'unbeatable'])} price. Rated {R.randint(3, 5)}/5 by "
                            f"{R.randint(10, 9999)} users. Order {p} today at shop{i}-{R.randint(1, 99)}.example."
                            for p in (R.choice(PRODUCTS) for _ in range(R.randint(3, 7))))
        else:
            text = " ".join(R.choice(all_words) for _ in range(R.randint(40, 150)))
        contribute(rng.uniform(0, 0.95 * SPAN_MS), R.choice(spammers), R.choice(dnames), "low_quality", text,
                   R.choice(["dataset", "feedback"]), stake=MICRO if R.random() < 0.2 else None)
    burst = int(1.4 * DAY + rng.uniform(0, HOUR))
    for k in range(2):  # two near-identical annotation clusters, uploaded by every farm account within seconds
        base = f"Annotation batch {k + 1}: label {R.choice(LANG['medical-en'][2])}. " + _text(R, "medical-en", 110)
        times = sorted(burst + int(rng.uniform(0, 8_000)) for _ in farm)
        first = None  # the earliest upload is the base text, every later one a one-word edit of it
        for a, ts in zip(R.sample(farm, len(farm)), times):
            t, j = _near(R, base, LANG["medical-en"][2], 1) if first else (base, None)
            c = contribute(ts, a, "medical-en", "farm", t, "annotation", first, j, stake=5 * MICRO)
            first = first or c["cid"]

    colluders = vals[9:]
    p_honest = {v: float(rng.uniform(0.9, 0.95)) for v in vals[:6]}
    vstake = {v: int(rng.integers(*((100, 400) if i < 6 else (20, 80) if i < 9 else (300, 900)))) * MICRO
              for i, v in enumerate(vals)}
    for c in contribs:
        good, k = c["cls"] == "honest", R.randint(3, 5)
        if not good and R.random() < 0.8:
            voters = R.sample(colluders, 2) + R.sample([v for v in vals if v not in colluders], k - 2)
        else:
            voters = R.sample(vals, k)
        for v in voters:
            role, u = roles[v], R.random()
            accept = {"validator_honest": good == (u < p_honest.get(v, 0)), "validator_lazy": u < 0.5,
                      "validator_colluding": u >= 0.4 if good else u < 0.95}[role]
            obj = {"type": "validation", "validator": v, "contribution_id": c["cid"], "verdict": "reject"}
            obj |= {"verdict": "accept"} if accept else {}
            q = R.uniform(*((0.6, 0.95) if accept else (0.05, 0.4)))
            obj |= {"quality": round(q, 2)} if R.random() < 0.6 else {}
            obj |= {"stake": vstake[v]} if R.random() < 0.7 else {}
            fast = role == "validator_colluding" and c["cls"] == "farm"
            delay = rng.uniform(2_000, 60_000) if fast else 30_000 + rng.exponential(2 * HOUR)
            emit(c["ts"] + int(delay), obj)

    # usage: outputs mixing filler (checked to share no 8-gram with any contribution) and copied spans
    grams = {tuple(w[i:i + SPAN_MIN]) for w in (words(c["text"]) for c in contribs)
             for i in range(len(w) - SPAN_MIN + 1)}

    def filler(dn: str) -> str:
        while True:
            s = _sentence(R, dn)
            w = words(s)
            if not any(tuple(w[i:i + SPAN_MIN]) in grams for i in range(len(w) - SPAN_MIN + 1)):
                return s

    by_dn = {dn: sorted((c for c in originals if c["dn"] == dn), key=lambda c: c["ts"]) for dn in dnames}
    pop = {c["cid"]: float(rng.pareto(1.2)) + 0.05 for c in originals}
    n_usage = int(round((len(events)) * 0.4 / 0.6))
    usage_truth: dict[str, dict] = {}
    for i in range(n_usage):
        ts = int(rng.uniform(HOUR, SPAN_MS))
        avail = [m for m, *_ in MODELS if mts[m] + 60_000 < ts]
        mid = R.choices(avail, weights=[MODEL_W[m] for m in avail])[0]
        pool = [c for dn in lineage[mid] for c in by_dn[dn] if c["ts"] + 1_000 < ts]
        n_sp = 0 if (not pool or R.random() < 0.2) else min(len(pool), R.choice([1, 1, 1, 2, 2, 3]))
        weights = np.array([pop[c["cid"]] for c in pool]) if n_sp else np.ones(1)
        picks = [pool[j] for j in rng.choice(len(weights), n_sp, replace=False, p=weights / weights.sum())]
        foreign = [c for dn in dnames if dn not in lineage[mid] for c in by_dn[dn] if c["ts"] + 1_000 < ts]
        outside = [R.choice(foreign)] if foreign and R.random() < 0.05 else []
        parts = [filler(R.choice(lineage[mid])) for _ in range(R.randint(1, 4))]
        copied, out_copied = [], []
        for c in picks + outside:
            s, e, n = _span(R, c["text"])
            parts.insert(R.randint(0, len(parts)), c["text"][s:e])
            (copied if c in picks else out_copied).append(
                {"contribution_id": c["cid"], "start": s, "end": e, "words": n})
        rid = f"r-{i + 1:06d}"
        fee = 0 if R.random() < 0.02 else int(math.exp(rng.uniform(math.log(1_000), math.log(2_000_000))))
        obj = {"type": "usage", "request_id": rid, "model_id": mid, "fee": fee, "output": " ".join(parts)}
        if R.random() < 0.25 and (picks or pool):
            infl = [{"contribution_id": c["cid"], "score": round(R.uniform(0.3, 1.0), 4)} for c in picks]
            if pool and (not infl or R.random() < 0.3):
                infl.append({"contribution_id": R.choice(pool)["cid"], "score": round(R.uniform(0.01, 0.15), 4)})
            obj["influence"] = infl
        usage_truth[rid] = {"model_id": mid, "fee": fee, "contribution_ids": [c["contribution_id"] for c in copied],
                            "copied": copied, "copied_out_of_lineage": out_copied}
        emit(ts, obj)

    events.sort(key=lambda e: (e[0], e[1], e[2]))
    stream: list[dict] = [{"kind": "ok", "ev": e} for e in events]
    for _ in range(sc(4)):  # late usage events: produced 15-40 records after their event time
        i = R.choice([i for i, s in enumerate(stream[:-60]) if s["ev"][3] == "usage" and not s.get("late")])
        stream.insert(i + R.randint(15, 40), stream.pop(i) | {"late": True})
    for _ in range(sc(10)):  # exact re-deliveries of earlier raw lines
        i = R.choice([i for i, s in enumerate(stream[:-40]) if s["kind"] == "ok"])
        stream.insert(min(len(stream), i + R.randint(20, 600)), {"kind": "dup", "of": stream[i]})
    cats = [c for c, n in MALFORMED.items() for _ in range(1 if c == "oversize" else sc(n))]
    for cat in cats:
        stream.insert(R.randint(1, len(stream)), {"kind": "bad", "cat": cat})

    mids = [m for m, *_ in MODELS]

    def template(typ: str, k: int) -> dict:
        dn = R.choice(dnames)
        return {"contribution": {"contribution_id": f"c-x{k:04d}", "contributor": R.choice(spammers + honest),
                                 "datanet": dn, "kind": "dataset", "content": _text(R, dn, 30)},
                "validation": {"validator": R.choice(vals), "contribution_id": R.choice(contribs)["cid"],
                               "verdict": "accept"},
                "model": {"model_id": f"m-x{k:04d}", "operator": R.choice(ops), "method": "finetune",
                          "base_models": [R.choice(mids)], "datanets": [{"datanet": dn, "weight": 1.0}]},
                "usage": {"request_id": f"r-x{k:04d}", "model_id": R.choice(mids), "fee": R.randint(1_000, 90_000),
                          "output": _text(R, dn, 25)}}[typ] | {"type": typ}

    def malformed(cat: str, obj: dict) -> str:
        typ = obj["type"]
        if cat == "invalid_json":
            raw = canonical(obj)
            return R.choice([raw[: len(raw) // 2], raw + "}", str(obj).replace("\n", " ")])
        if cat == "missing_field":
            del obj[R.choice(REQUIRED[typ] + ["event_id", "ts"])]
        elif cat == "negative_fee":
            obj["fee"] = -R.randint(1, 500_000)
        elif cat == "fractional_fee":
            obj["fee"] = R.choice([1.5, 2500.75, 0.5])
        elif cat == "unknown_type":
            obj["type"] = R.choice(["payment", "refund", "Contribution", "usage_v2", "stake"])
        elif cat == "bad_timestamp":
            obj["ts"] = R.choice(["2026-13-01T00:00:00Z", "2026-01-01 10:00:00", "yesterday", "2026-02-30T12:00:00Z",
                                  "", 1767225600])
        elif cat == "oversize":
            unit = _text(R, "legal-de", 150) + " "
            obj["content"] = (unit * (int(1.1 * (1 << 20)) // len(unit.encode()) + 1)).strip()
        else:
            key, val = R.choice({"contribution": [("stake", "100"), ("contribution_id", 12345),
                                                  ("content", ["a", "b"])],
                                 "validation": [("verdict", True), ("quality", "high"), ("stake", 1.5e6)],
                                 "model": [("datanets", "legal-de"), ("base_models", "m-med-base"),
                                           ("inherit", "0.5")],
                                 "usage": [("model_id", 7), ("fee", "2500"),
                                           ("influence", [{"contribution_id": "c-00001", "score": "high"}])]}[typ])
            obj[key] = val
        return canonical(obj)

    records, truth_bad, redeliv, late, seen_ts = [], [], [], [], 0
    for idx, s in enumerate(stream):
        if s["kind"] == "ok":
            ts, _, _, typ, obj = s["ev"]
            s["event_id"] = f"ev-{idx + 1:06d}"
            s["index"] = idx
            s["raw"] = canonical(dict(obj, event_id=s["event_id"], ts=fmt(ts)))
            records.append((TOPIC[typ], s["raw"]))
            seen_ts = max(seen_ts, ts)
            if s.get("late"):
                late.append({"event_id": s["event_id"], "index": idx})
        elif s["kind"] == "dup":
            records.append((TOPIC[s["of"]["ev"][3]], s["of"]["raw"]))
            redeliv.append({"event_id": s["of"]["event_id"], "index": idx, "original_index": s["of"]["index"]})
        else:
            cat = s["cat"]
            typ = ("usage" if cat in ("negative_fee", "fractional_fee") else "contribution" if cat == "oversize"
                   else R.choice(list(TOPIC)))
            obj = template(typ, idx) | {"event_id": f"ev-{idx + 1:06d}", "ts": fmt(seen_ts)}
            records.append((TOPIC[typ], malformed(cat, obj)))
            truth_bad.append({"index": idx, "topic": TOPIC[typ], "reason": cat, "event_id": obj.get("event_id")})

    # ground truth: duplicate_of computed in production order (same words, or 5-gram Jaccard >= 0.8)
    pos = {s["ev"][4]["contribution_id"]: s["index"] for s in stream
           if s["kind"] == "ok" and s["ev"][3] == "contribution"}
    order = sorted(contribs, key=lambda c: pos[c["cid"]])
    wl = [words(c["text"]) for c in order]
    sh = [{tuple(w[i:i + K]) for i in range(max(1, len(w) - K + 1))} for w in wl]
    index: dict[tuple, list[int]] = {}
    ctruth, cls_of = {}, {c["cid"]: c["cls"] for c in contribs}
    for i, c in enumerate(order):
        hits: dict[int, int] = {}
        for g in sh[i]:
            for j in index.setdefault(g, []):
                hits[j] = hits.get(j, 0) + 1
            index[g].append(i)
        dup = min((j for j, h in hits.items() if h / (len(sh[i]) + len(sh[j]) - h) >= DUP_J or wl[j] == wl[i]),
                  default=None)
        ctruth[c["cid"]] = {"class": c["cls"], "contributor": c["who"], "datanet": c["dn"], "kind": c["kind"],
                            "language": LANG[c["dn"]][0], "original_of": c["original_of"], "words": len(wl[i]),
                            "jaccard_to_original": c["jaccard"],
                            "duplicate_of": None if dup is None else order[dup]["cid"]}
    vt = {v: {"role": roles[v], "votes": 0, "accuracy": 0.0} for v in vals}
    for o in (e[4] for e in events if e[3] == "validation"):
        vt[o["validator"]]["votes"] += 1
        vt[o["validator"]]["accuracy"] += (o["verdict"] == "accept") == (cls_of[o["contribution_id"]] == "honest")
    for v in vt.values():
        v["accuracy"] = round(v["accuracy"] / max(1, v["votes"]), 4)
    count = lambda it, vals: {k: sum(1 for x in it if x == k) for k in vals}  # noqa: E731
    truth = {
        "contract": "v1", "generator": {"seed": seed, "scale": scale, "start_ts": start_ts},
        "params": {"shingle_words": K, "dup_jaccard": DUP_J, "event_time_span_ms": SPAN_MS, "micro_per_token": MICRO},
        "datanets": {dn: {"language": LANG[dn][0]} for dn in dnames}, "accounts": dict(sorted(roles.items())),
        "contributions": ctruth, "validators": vt, "usage": usage_truth, "malformed": truth_bad,
        "models": {m: {"operator": ops[op], "method": meth, "base_models": b, "ancestors": ancestors[m],
                       "lineage_datanets": lineage[m]} for m, meth, b, _, _, op, _ in MODELS},
        "redelivered_event_ids": [r["event_id"] for r in redeliv], "redeliveries": redeliv, "late": late,
        "counts": {"records": len(records), "records_per_topic": count([r[0] for r in records], TOPIC.values()),
                   "valid_events_per_type": count([e[3] for e in events], TOPIC), "malformed": len(truth_bad),
                   "redeliveries": len(redeliv), "late": len(late),
                   "classes": count(cls_of.values(), ("honest", "exact_dup", "near_dup", "low_quality", "farm")),
                   "roles": count(roles.values(), sorted(set(roles.values()))),
                   "usage_with_copies": sum(1 for u in usage_truth.values() if u["copied"]),
                   "usage_fee_zero": sum(1 for u in usage_truth.values() if u["fee"] == 0),
                   "fees_total_micro": sum(u["fee"] for u in usage_truth.values())},
    }
    return Scenario(records=records, truth=truth)


def write(scenario: Scenario, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev, tr = out / "events.jsonl", out / "truth.json"
    with ev.open("w", encoding="utf-8", newline="\n") as f:
        for _, raw in scenario.records:
            f.write(raw + "\n")
    tr.write_text(json.dumps(scenario.truth, ensure_ascii=False, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    return ev, tr
