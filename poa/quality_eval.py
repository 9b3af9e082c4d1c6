"""Spam detection on real data, through the production core (issue "fair rewards").

``evaluate(items, seed, policy=None)`` builds one event log from real items
(poa/realdata.py: prose in many languages, code, tables, annotation labels, legal text)
and spam made from them, runs it through :func:`processors.replay.process_all` (the
worker's core: duplicates, MinHash, quality signals, farms, the validator model) and
scores the statuses:

- **honest uploads**: each item by an ordinary account (ten items per account, one
  upload every 13 to 37 minutes), into a datanet per (kind, language); ``labels`` items are
  annotations posted by four annotators each (agreement, not copies);
- **injected spam**, each made from real items of the same run: ``exact_copy`` (another
  account re-uploads an item), ``near_copy`` (about 3% of its words replaced),
  ``templated`` (families of 20 texts: one ad template whose slots are filled with words of
  the corpus), ``word_salad`` (words of the corpus in random order, punctuation every 6 to
  20 words), ``label_farm`` (five bots post an item's label within seconds, item after
  item);
- **signal level** (``before votes``): an honest item is a false positive when its status
  right after upload is ``spam`` or ``duplicate``; a spam item is caught when it is;
- **outcome** (``after votes``): four honest validators then accept every honest item
  and reject every spam item; an honest item that does not end ``accepted`` is a false
  positive of the whole system.

Deterministic (seeded; no wall clock). Never calibrate on the split you assert on:
callers pass the calibration split to tune and the held-out split to report.
"""
from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from poa_stream.realdata import Item

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
SPAM_KINDS = ("exact_copy", "near_copy", "templated", "word_salad", "label_farm")
TEMPLATE = ("Looking for the best {0} in {1}? Our {2} {0} service offers {3} and {4} at the lowest "
            "price. Order your {0} now and get {5} free! Limited offer for {1} customers, call today. "
            "Thousands of happy {6} clients trust our {2} {0}.")
VALIDATORS = tuple(f"eval-validator-{k}" for k in range(4))
# an honest item marked duplicate whose normalized word 5-grams are at least this much in the
# text it is said to copy IS a copy (licenses quoted in copyright files, translations
# shared by two locales): reported apart, not as a false positive
COPY_TRUTH = 0.7


@dataclass
class Score:
    honest: Counter = field(default_factory=Counter)  # (kind, lang) -> items
    fp_before: Counter = field(default_factory=Counter)
    fp_after: Counter = field(default_factory=Counter)
    corpus_copies: Counter = field(default_factory=Counter)  # honest items that ARE copies (exact check)
    spam: Counter = field(default_factory=Counter)  # spam kind -> items
    caught: Counter = field(default_factory=Counter)
    spam_accepted: Counter = field(default_factory=Counter)  # spam kind -> ended accepted (either run)
    reasons: dict = field(default_factory=lambda: defaultdict(Counter))  # (kind, lang) -> reasons of FPs

    def rate(self, num: Counter, den: Counter, key) -> float:
        return num[key] / den[key] if den[key] else float("nan")

    def by_kind(self, num: Counter) -> dict[str, tuple[int, int]]:
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for (kind, _), n in self.honest.items():
            out[kind][1] += n
        for (kind, _), n in num.items():
            out[kind][0] += n
        return {k: (v[0], v[1]) for k, v in sorted(out.items())}


def _ts(minutes: float) -> str:
    t = T0 + timedelta(seconds=round(minutes * 60, 3))
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _vocab(items: list[Item]) -> dict[str, list[str]]:
    """Words per language, in first-seen order (deterministic)."""
    out: dict[str, dict[str, None]] = defaultdict(dict)
    for it in items:
        for w in it.text.split()[:400]:
            if w.isalpha():
                out[it.lang].setdefault(w, None)
    return {lang: list(ws) for lang, ws in out.items()}


def make_spam(items: list[Item], seed: int, per_kind: int) -> list[tuple[str, Item]]:
    """(spam kind, item) pairs made from ``items``; ``label_farm`` items are the labels the
    bots will copy (the events are built by :func:`events`)."""
    R = random.Random(seed)
    prose = [it for it in items if it.kind in ("prose", "legal") and len(it.text.split()) >= 40]
    vocab = _vocab(prose)
    langs = sorted(lang for lang, ws in vocab.items() if len(ws) >= 200)
    out: list[tuple[str, Item]] = []
    pool = sorted(items, key=lambda i: i.id)
    for k in range(per_kind):
        src = R.choice(pool)
        out.append(("exact_copy", Item(f"spam:exact:{k}", src.kind, src.lang, src.text, src.id)))
        src = R.choice([it for it in pool if len(it.text.split()) >= 40])
        words = src.text.split(" ")
        for j in R.sample(range(len(words)), max(1, round(0.03 * len(words)))):
            words[j] = R.choice(vocab.get(src.lang) or vocab["en"])
        out.append(("near_copy", Item(f"spam:near:{k}", src.kind, src.lang, " ".join(words), src.id)))
        lang = R.choice(langs)
        ws = vocab[lang]
        n = R.randint(60, 200)
        salad, cut = [], R.randint(6, 20)
        for j in range(n):
            salad.append(R.choice(ws))
            if j == cut:
                salad[-1] += "."
                cut = j + R.randint(6, 20)
        out.append(("word_salad", Item(f"spam:salad:{k}", "prose", lang, " ".join(salad), "")))
    for fam in range(max(1, per_kind // 20)):
        lang = R.choice(langs)
        ws = vocab[lang]
        for k in range(20):
            text = TEMPLATE.format(*(R.choice(ws) for _ in range(7)))
            out.append(("templated", Item(f"spam:tpl:{fam}:{k}", "prose", lang, text, "")))
    labels = [it for it in pool if it.kind == "labels"]
    for k, src in enumerate(R.sample(labels, min(len(labels), max(2, per_kind // 5)))):
        out.append(("label_farm", Item(f"spam:farm:{k}", "labels", src.lang, src.text, src.id)))
    return out


def events(items: list[Item], spam: list[tuple[str, Item]], seed: int,
           votes: bool) -> tuple[list[tuple[str, bytes]], dict[str, tuple[str, str, str]]]:
    """The event log and ``contribution_id -> (role, kind, lang)`` (role honest or the
    spam kind)."""
    R = random.Random(seed + 1)
    recs: list[tuple[float, int, str, dict]] = []
    truth: dict[str, tuple[str, str, str]] = {}
    n = [0]

    def emit(minute: float, topic: str, obj: dict) -> None:
        n[0] += 1
        recs.append((minute, n[0], topic, {"event_id": f"q{n[0]:07d}", "ts": _ts(minute), **obj}))

    def contribute(minute, who, cid, it: Item, kind: str, role: str) -> None:
        dn = f"{it.kind}-{it.lang}"
        emit(minute, "poa.contributions", {"type": "contribution", "contribution_id": cid,
                                           "contributor": who, "datanet": dn, "kind": kind,
                                           "content": it.text})
        truth[cid] = (role, it.kind, it.lang)
        if votes:
            verdict = "accept" if role == "honest" else "reject"
            for j, v in enumerate(VALIDATORS):
                emit(minute + 60 + j, "poa.validations", {"type": "validation", "validator": v,
                                                          "contribution_id": cid, "verdict": verdict})

    order = sorted(items, key=lambda i: i.id)
    R.shuffle(order)
    clock: dict[str, float] = {}
    uploaded: dict[str, float] = {}  # item id -> minute of its (first) honest upload
    for k, it in enumerate(order):
        if it.kind == "labels":
            for a in range(4):  # four annotators agree, each at their own pace
                who = f"annotator-{(k // 10) % 50}-{a}"
                clock[who] = clock.get(who, R.uniform(0, 60)) + R.uniform(13, 37)
                contribute(clock[who], who, f"{it.id}#a{a}", it, "annotation", "honest")
                uploaded.setdefault(it.id, clock[who])
            continue
        who = f"author-{k // 10}"
        clock[who] = clock.get(who, R.uniform(0, 600)) + R.uniform(13, 37)
        contribute(clock[who], who, it.id, it, "dataset", "honest")
        uploaded[it.id] = clock[who]
    end = max(clock.values(), default=0.0)
    farm_t = end / 3
    for k, (kind, it) in enumerate(spam):
        minute = R.uniform(60, end)
        if kind == "label_farm":
            farm_t += R.uniform(20, 90)
            for b in range(5):  # five bots within seconds, item after item
                contribute(farm_t + b * 2 / 60, f"bot-{b}", f"{it.id}#b{b}", it, "annotation", kind)
            continue
        if kind in ("exact_copy", "near_copy"):  # a copy comes after its original
            minute = uploaded[it.source] + R.uniform(30, 3_000)
        contribute(minute, f"spammer-{k % 40}", it.id, it, "dataset", kind)
    recs.sort(key=lambda r: (r[0], r[1]))
    return ([(t, json.dumps(o, sort_keys=True, ensure_ascii=False).encode()) for _, _, t, o in recs], truth)


def containment(a: str, b: str, k: int = 5) -> float:
    """Exact share of ``a``'s word ``k``-grams found in ``b`` (the ground truth for "a is
    a copy of b", independent of the detector's MinHash and span index)."""
    from poa_stream.attribution.text import token_hashes  # the words as the pipeline normalizes them

    def grams(t: str) -> set:
        w = token_hashes(t).tolist()
        return {tuple(w[i:i + k]) for i in range(max(1, len(w) - k + 1))}
    ga = grams(a)
    return len(ga & grams(b)) / len(ga) if ga else 0.0


def evaluate(items: list[Item], seed: int = 0, policy: dict | None = None, spam_per_kind: int = 100,
             home: Path | None = None) -> Score:
    """Score the production core on ``items`` plus spam made from them (module doc)."""
    import tempfile

    from poa_stream.settings import Settings
    from poa_stream.processors.replay import process_all
    spam = make_spam(items, seed, spam_per_kind)
    score = Score()
    with tempfile.TemporaryDirectory(dir=home) as d:
        pf = Path(d) / "policy.json"
        pf.write_text(json.dumps({"wait_expiry_s": 10 * 86_400.0, **(policy or {})}))
        for votes in (False, True):
            recs, truth = events(items, spam, seed, votes)
            text_of = {o["contribution_id"]: o["content"] for o in map(json.loads, (r for _, r in recs))
                       if o["type"] == "contribution"}
            core, out = process_all(Settings(home=Path(d) / f"home-{votes}", policy_file=pf), recs)
            flags = defaultdict(list)
            for f in out.rows.get("flags", []):
                flags[f["contribution_id"]].append(f["reason"])
            for cid, (role, kind, lang) in truth.items():
                c = core.contribs[cid]
                status = c.status
                bad = status in ("spam", "duplicate")
                if role == "honest" and status == "duplicate" and c.duplicate_of in truth \
                        and truth[c.duplicate_of][0] == "honest" \
                        and containment(text_of[cid], text_of[c.duplicate_of]) >= COPY_TRUTH:
                    if not votes:  # a real text that copies another real text: not a false positive
                        score.corpus_copies[(kind, lang)] += 1
                    continue
                if role == "honest":
                    if not votes:
                        score.honest[(kind, lang)] += 1
                        if bad:
                            score.fp_before[(kind, lang)] += 1
                            score.reasons[(kind, lang)].update(flags[cid])
                    elif status != "accepted":
                        score.fp_after[(kind, lang)] += 1
                else:
                    score.spam_accepted[role] += status == "accepted"
                    if not votes:
                        score.spam[role] += 1
                        score.caught[role] += bad
    return score


def table(score: Score, min_items: int = 20) -> str:
    """Markdown: false positives per kind and per language (before / after votes), recall
    per spam kind."""
    rows = ["| kind | language | honest items | marked spam/duplicate at upload | not accepted after unanimous votes |",
            "|---|---|---|---|---|"]
    for kind, (fp, n) in score.by_kind(score.fp_before).items():
        after = sum(v for (k, _), v in score.fp_after.items() if k == kind)
        copies = sum(v for (k, _), v in score.corpus_copies.items() if k == kind)
        rows.append(f"| **{kind}** | all | {n} | {fp} ({fp / n:.1%}) | {after} ({after / n:.1%}) |"
                    + (f" (+{copies} real copies of other real items, marked duplicate: not counted)" if copies else ""))
    for (kind, lang), n in sorted(score.honest.items()):
        if n >= min_items:
            fp, after = score.fp_before[(kind, lang)], score.fp_after[(kind, lang)]
            rows.append(f"| {kind} | {lang} | {n} | {fp} ({fp / n:.1%}) | {after} ({after / n:.1%}) |")
    rows += ["", "| injected spam | items | caught at upload (recall) |", "|---|---|---|"]
    total = sum(score.spam.values())
    for kind in SPAM_KINDS:
        n = score.spam[kind]
        if n:
            rows.append(f"| {kind} | {n} | {score.caught[kind]} ({score.caught[kind] / n:.1%}) |")
    caught = sum(score.caught.values())
    rows.append(f"| **all** | {total} | {caught} ({caught / total:.1%}) |")
    return "\n".join(rows)
