"""Per-contribution quality signals: cheap, language-agnostic evidence of low-quality text.

Contract:
- ``signals(token_hashes, text_bytes, familiarity=None) -> QualitySignals`` (pure; never learns).
  ``token_hashes``: uint64 word hashes of the content (``attribution.text.token_hashes``);
  ``text_bytes``: the raw UTF-8 content, punctuation intact (sentence ends are read from it;
  only its first ``COMPRESS_MAX_BYTES`` are compressed). Fields are floats; NaN = not measured.
  - ``tokens``: number of words; ``compression``: zlib-6 size / raw size (lower = more redundant);
  - ``repetition``: share of word-3-gram positions whose 3-gram occurs again in the same text;
  - ``entropy_bits``: Shannon entropy of the token distribution (bits);
    ``entropy_norm``: ``entropy_bits / log2(tokens)`` in [0, 1] (length-free);
  - ``words_per_sentence``: tokens / sentence ends (``.!?`` followed by whitespace, a quote, a
    bracket or the end; CJK ``。！？``); ``tokens`` when there is none;
  - ``familiarity``: share of the text's word bigrams that the corpus model ``Familiarity`` has
    seen in earlier accepted texts (a cheap stand-in for CCNet-style LM perplexity filtering);
    NaN without a model, while the model is cold, or under ``MIN_BIGRAMS`` bigrams.
- ``low_quality_reasons(sig, th=DEFAULT_THRESHOLDS) -> [(reason, score)]`` in a fixed order;
  score in (0, 1], the distance past the threshold (1 = extreme). Only ``too_short`` applies
  under ``th.min_tokens_stats`` tokens. ``is_low_quality(reasons)``: at least
  ``th.min_reasons`` (2) reasons; one reason alone is never spam evidence (code, lists, tables and
  new topics legitimately trip one).
- Default thresholds, calibrated on ``poa.scenario.generate(seed=7)`` (observed ranges:
  honest 300 texts vs low-quality 30 = repetitive / templated ad copy / word salad):
  compression < 0.20 (honest >= 0.26, repetitive <= 0.11); repetition > 0.60 (honest <= 0.46);
  entropy_norm < 0.50 (honest >= 0.63, repetitive <= 0.29); words_per_sentence < 6.5 "fragmented"
  (honest >= 7.8, templated <= 5.25) or > 35 "run_on" (honest <= 14.5, salad has no sentence end);
  familiarity < 0.30 "unfamiliar" (honest >= 0.43 once warm, low-quality <= 0.06); tokens < 8
  "too_short". Result on the scenario: 30/30 low-quality texts with >= 2 reasons, 0/300 honest.
- ``ordered``: :meth:`OrderModel.ordered_share`, the share of adjacent pairs of known words
  seen side by side in the shipped :class:`Reference` or in earlier clean prose (reason
  ``scrambled`` under ``th.min_ordered``; word salad). ``common_share``: :class:`Commonness`
  (reason ``uncommon``). ``th.decisive``: reasons that mark spam alone (policy
  ``quality_decisive_reasons``); :func:`is_low_quality` is ``len >= min_reasons`` or one of them.
- ``Familiarity(bits=22)``: saturating uint8 counters of hashed word bigrams (4 MiB, no Python
  ``hash``); ``score(toks, domain=0)``, ``learn(toks, domain=0)``. Feed ``learn`` only texts with NO
  reason at all: a spam text seen while the model is cold (one reason, say "fragmented") would
  otherwise teach its template and make every later copy of it look familiar. Cold (NaN) until
  ``warm_bigrams`` (1000) distinct slots are filled, i.e. after a handful of texts. ``domain``
  (e.g. a datanet index) separates corpora in one table.
"""
from __future__ import annotations

import hashlib
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np

COMPRESS_MAX_BYTES = 256 * 1024
MIN_BIGRAMS = 8
MIN_KNOWN_PAIRS = 8


@dataclass(frozen=True)
class QualitySignals:
    tokens: float
    compression: float
    repetition: float
    entropy_bits: float
    entropy_norm: float
    words_per_sentence: float
    familiarity: float = math.nan
    common_share: float = math.nan
    ordered: float = math.nan


@dataclass(frozen=True)
class Thresholds:
    min_tokens: float = 8.0
    min_tokens_stats: float = 16.0
    max_compression: float = 0.20
    max_repetition: float = 0.60
    min_entropy_norm: float = 0.50
    min_words_per_sentence: float = 6.5
    max_words_per_sentence: float = 35.0
    min_familiarity: float = 0.30
    min_reasons: int = 2
    min_common_share: float = 0.0  # "uncommon"; 0 = off
    min_ordered: float = 0.0  # "scrambled"; 0 = off
    decisive: tuple[str, ...] = ()  # reasons selective enough to mark spam alone
    max_compression_structured: float = 0.10  # code and tables (text_form)
    max_repetition_structured: float = 0.85
    min_entropy_norm_structured: float = 0.35


DEFAULT_THRESHOLDS = Thresholds()


@nb.njit(cache=True, nogil=True)
def _mix(x):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@nb.njit(cache=True, nogil=True)
def token_stats(toks: np.ndarray):
    """(entropy_bits, repetition) of a uint64 token-hash array; repetition NaN under 3 tokens."""
    n = toks.shape[0]
    if n == 0:
        return np.nan, np.nan
    s = np.sort(toks)
    ent = 0.0
    run = 1
    for i in range(1, n + 1):
        if i < n and s[i] == s[i - 1]:
            run += 1
        else:
            p = run / n
            ent -= p * math.log2(p)
            run = 1
    m = n - 2
    if m <= 0:
        return ent, np.nan
    g = np.empty(m, dtype=np.uint64)
    for i in range(m):
        g[i] = _mix(_mix(_mix(toks[i]) ^ toks[i + 1]) ^ toks[i + 2])
    g.sort()
    rep = 0
    run = 1
    for i in range(1, m + 1):
        if i < m and g[i] == g[i - 1]:
            run += 1
        else:
            if run > 1:
                rep += run
            run = 1
    return ent, rep / m


@nb.njit(cache=True, nogil=True)
def sentence_ends(buf: np.ndarray) -> int:
    """Count sentence ends in UTF-8 bytes: ``.!?`` + whitespace/quote/bracket/end, CJK 。！？."""
    n = buf.shape[0]
    k = 0
    for i in range(n):
        b = buf[i]
        if b == 46 or b == 33 or b == 63:
            if i + 1 == n:
                k += 1
            else:
                c = buf[i + 1]
                if c == 32 or c == 9 or c == 10 or c == 13 or c == 34 or c == 39 or c == 41 or c == 93:
                    k += 1
        elif b == 0xE3 and i + 2 < n and buf[i + 1] == 0x80 and buf[i + 2] == 0x82:
            k += 1
        elif b == 0xEF and i + 2 < n and buf[i + 1] == 0xBC and (buf[i + 2] == 0x81 or buf[i + 2] == 0x9F):
            k += 1
    return k


@nb.njit(cache=True, nogil=True)
def bigram_slots(toks: np.ndarray, domain: int, bits: int) -> np.ndarray:
    """Table slot (int64 < 2**bits) of each adjacent token pair, seeded by ``domain``."""
    m = toks.shape[0] - 1
    if m <= 0:
        return np.empty(0, dtype=np.int64)
    out = np.empty(m, dtype=np.int64)
    seed = _mix(np.uint64(domain) + np.uint64(0x9E3779B97F4A7C15))
    shift = np.uint64(64 - bits)
    for i in range(m):
        out[i] = np.int64(_mix(_mix(toks[i] ^ seed) + toks[i + 1]) >> shift)
    return out


class Familiarity:
    """Streaming word-bigram familiarity model (see the module contract)."""

    def __init__(self, bits: int = 22, warm_bigrams: int = 1_000):
        if not 8 <= bits <= 30:
            raise ValueError(f"bits={bits}: use 8..30 (the table holds 2**bits uint8 counters)")
        self.bits, self.warm_bigrams = bits, warm_bigrams
        self.table = np.zeros(1 << bits, dtype=np.uint8)
        self.filled = 0
        self.filled_by: dict[int, int] = {}  # per domain: a datanet is warm on its own texts

    @property
    def warm(self) -> bool:
        return self.filled >= self.warm_bigrams

    def is_warm(self, domain: int = 0) -> bool:
        return self.filled_by.get(domain, 0) >= self.warm_bigrams

    def score(self, toks: np.ndarray, domain: int = 0) -> float:
        """NaN until ``domain`` itself is warm: a datanet in a language (or a field) nobody
        else writes in is judged only against its own earlier texts."""
        if not self.is_warm(domain) or toks.shape[0] - 1 < MIN_BIGRAMS:
            return math.nan
        return float(np.mean(self.table[bigram_slots(toks, domain, self.bits)] > 0))

    def learn(self, toks: np.ndarray, domain: int = 0) -> None:
        slots = np.unique(bigram_slots(toks, domain, self.bits))
        cur = self.table[slots]
        new = int(np.count_nonzero(cur == 0))
        self.filled += new
        self.filled_by[domain] = self.filled_by.get(domain, 0) + new
        self.table[slots] = np.minimum(cur.astype(np.int16) + 1, 255).astype(np.uint8)


@nb.njit(cache=True, nogil=True)
def unigram_slots(toks: np.ndarray, domain: int, bits: int) -> np.ndarray:
    out = np.empty(toks.shape[0], dtype=np.int64)
    seed = _mix(np.uint64(domain) + np.uint64(0x632BE59BD9B4E019))
    shift = np.uint64(64 - bits)
    for i in range(toks.shape[0]):
        out[i] = np.int64(_mix(toks[i] ^ seed) >> shift)
    return out


class Commonness:
    """Streaming word frequencies per domain (hashed uint32 counters): the share of a text's
    words that are *common* in its datanet (each at least ``common_frac`` of the datanet's
    words so far). Natural language in any script spends a third or more of its words on a
    few frequent ones; word salad drawn from a vocabulary and slot-filled templates do not.
    NaN until the domain has ``warm_tokens`` words, or for texts under 16 words."""

    def __init__(self, bits: int = 20, warm_tokens: int = 5_000, common_frac: float = 0.002):
        self.bits, self.warm_tokens, self.common_frac = bits, warm_tokens, common_frac
        self.table = np.zeros(1 << bits, dtype=np.uint32)
        self.total_by: dict[int, int] = {}

    def score(self, toks: np.ndarray, domain: int = 0) -> float:
        total = self.total_by.get(domain, 0)
        if total < self.warm_tokens or toks.shape[0] < 16:
            return math.nan
        counts = self.table[unigram_slots(toks, domain, self.bits)]
        return float(np.mean(counts >= self.common_frac * total))

    def learn(self, toks: np.ndarray, domain: int = 0) -> None:
        np.add.at(self.table, unigram_slots(toks, domain, self.bits), 1)
        self.total_by[domain] = self.total_by.get(domain, 0) + int(toks.shape[0])


REFERENCE_PATH = Path(__file__).with_name("data") / "reference_ngrams.npz"


@nb.njit(cache=True, nogil=True)
def word_key32(tok):
    return np.uint32(_mix(tok) >> np.uint64(32))


@nb.njit(cache=True, nogil=True)
def pair_key32(a, b):
    return np.uint32(_mix(_mix(a) + b) >> np.uint64(32))


@nb.njit(cache=True, nogil=True)
def _member(sorted_keys: np.ndarray, key) -> bool:
    i = np.searchsorted(sorted_keys, key)
    return i < sorted_keys.shape[0] and sorted_keys[i] == key


@nb.njit(cache=True, nogil=True)
def _bit(bits: np.ndarray, key) -> bool:
    k = np.uint64(key) & np.uint64(bits.shape[0] * 64 - 1)
    return (bits[k >> np.uint64(6)] >> (k & np.uint64(63))) & np.uint64(1) == np.uint64(1)


@nb.njit(cache=True, nogil=True)
def _set_bits(bits: np.ndarray, keys: np.ndarray) -> None:
    mask = np.uint64(bits.shape[0] * 64 - 1)
    for key in keys:
        k = np.uint64(key) & mask
        bits[k >> np.uint64(6)] |= np.uint64(1) << (k & np.uint64(63))


@nb.njit(cache=True, nogil=True)
def ordered_pairs(toks: np.ndarray, ref_words: np.ndarray, ref_pairs: np.ndarray,
                  word_bits: np.ndarray, pair_bits: np.ndarray):
    """(known pairs, seen pairs) of adjacent words: a pair is *known* when both words are in
    the reference (``ref_words``, sorted uint32 keys) or in the learned ``word_bits`` bitset,
    and *seen* when the pair itself is in ``ref_pairs`` or the learned ``pair_bits``."""
    m = toks.shape[0] - 1
    if m <= 0:
        return 0, 0
    known_w = np.empty(m + 1, dtype=np.bool_)
    for i in range(m + 1):
        w = word_key32(toks[i])
        known_w[i] = _bit(word_bits, w) or _member(ref_words, w)
    known = 0
    seen = 0
    for i in range(m):
        if known_w[i] and known_w[i + 1]:
            known += 1
            p = pair_key32(toks[i], toks[i + 1])
            if _bit(pair_bits, p) or _member(ref_pairs, p):
                seen += 1
    return known, seen


class Reference:
    """A fixed word-order model: the uint32 keys (:func:`word_key32`, :func:`pair_key32`) of
    the words and adjacent word pairs of a reference corpus, sorted. Built by ``python
    bench/quality.py --build-reference`` from the real corpora's calibration part (never the
    held-out part) and shipped as ``attribution/data/reference_ngrams.npz``: a datanet is
    judged from its first text on, the way CCNet judges text with a pre-trained language
    model. ``fingerprint``: BLAKE2b of the keys (the policy names the model by it)."""

    def __init__(self, words: np.ndarray, pairs: np.ndarray):
        self.words = np.ascontiguousarray(np.unique(words.astype(np.uint32)))
        self.pairs = np.ascontiguousarray(np.unique(pairs.astype(np.uint32)))
        h = hashlib.blake2b(digest_size=8)
        h.update(self.words.tobytes())
        h.update(self.pairs.tobytes())
        self.fingerprint = h.hexdigest()

    @classmethod
    def empty(cls) -> "Reference":
        return cls(np.empty(0, np.uint32), np.empty(0, np.uint32))

    @classmethod
    def load(cls, path: Path = REFERENCE_PATH) -> "Reference":
        with np.load(path) as z:
            return cls(z["words"], z["pairs"])

    def save(self, path: Path = REFERENCE_PATH) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, words=self.words, pairs=self.pairs)

    @staticmethod
    def keys_of(toks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _keys_of(np.ascontiguousarray(toks, dtype=np.uint64))


@nb.njit(cache=True, nogil=True)
def _keys_of(toks):
    n = toks.shape[0]
    w = np.empty(n, dtype=np.uint32)
    p = np.empty(max(0, n - 1), dtype=np.uint32)
    for i in range(n):
        w[i] = word_key32(toks[i])
        if i + 1 < n:
            p[i] = pair_key32(toks[i], toks[i + 1])
    return w, p


class OrderModel:
    """Word order of natural text: the shipped :class:`Reference` plus what clean prose of
    any datanet taught since (bitsets of word and pair keys: ``word_bits`` and ``pair_bits``
    bits, exact below a fill of a few percent; 2 MiB + 8 MiB by default).

    ``ordered_share(toks)``: the share of the text's adjacent pairs of *known* words that
    were seen side by side. Natural text reuses word orders its language already holds ("of
    the", "is used to"); words drawn at random from a vocabulary (word salad) form pairs
    nobody wrote, although each word is familiar. Unknown words (a new topic, a language
    nobody wrote in yet) do not count. NaN under ``min_pairs`` known pairs."""

    def __init__(self, reference: Reference | None = None, word_bits: int = 24, pair_bits: int = 26,
                 min_pairs: int = MIN_KNOWN_PAIRS):
        self.reference = reference or Reference.empty()
        self.words = np.zeros(1 << (word_bits - 6), dtype=np.uint64)
        self.pairs = np.zeros(1 << (pair_bits - 6), dtype=np.uint64)
        self.min_pairs = min_pairs

    def ordered_share(self, toks: np.ndarray) -> float:
        known, seen = ordered_pairs(np.ascontiguousarray(toks, dtype=np.uint64), self.reference.words,
                                    self.reference.pairs, self.words, self.pairs)
        return seen / known if known >= self.min_pairs else math.nan

    def learn(self, toks: np.ndarray) -> None:
        w, p = Reference.keys_of(toks)
        _set_bits(self.words, w)
        _set_bits(self.pairs, p)


def signals(token_hashes: np.ndarray, text_bytes: bytes,
            familiarity: Familiarity | None = None, domain: int = 0,
            common: Commonness | None = None, order: OrderModel | None = None) -> QualitySignals:
    toks = np.ascontiguousarray(token_hashes, dtype=np.uint64)
    n = int(toks.shape[0])
    head = text_bytes[:COMPRESS_MAX_BYTES]
    comp = len(zlib.compress(head, 6)) / len(head) if head else math.nan
    ent, rep = token_stats(toks)
    ends = sentence_ends(np.frombuffer(text_bytes, dtype=np.uint8))
    return QualitySignals(
        tokens=float(n), compression=float(comp), repetition=float(rep), entropy_bits=float(ent),
        entropy_norm=float(ent / math.log2(n)) if n >= 2 else math.nan,
        words_per_sentence=float(n / ends) if ends else float(n),
        familiarity=familiarity.score(toks, domain) if familiarity is not None else math.nan,
        common_share=common.score(toks, domain) if common is not None else math.nan,
        ordered=order.ordered_share(toks) if order is not None else math.nan)


def _below(x: float, thr: float) -> float:
    return min(1.0, max(1e-6, 1.0 - x / thr)) if x < thr else 0.0


def _above(x: float, thr: float, top: float | None = None) -> float:
    if not x > thr:  # also False for NaN
        return 0.0
    return min(1.0, max(1e-6, (x - thr) / (top - thr) if top else 1.0 - thr / x))


def low_quality_reasons(sig: QualitySignals, th: Thresholds = DEFAULT_THRESHOLDS,
                        form: str = "prose") -> list[tuple[str, float]]:
    """Reasons (fixed order) with a score in (0, 1]; empty for a clean text. ``form``
    (:func:`text_form`): the sentence and familiarity reasons (``fragmented``, ``run_on``,
    ``unfamiliar``) judge prose only; code and tables are checked for degenerate content
    (compressible, repetitive, low entropy) with the looser ``*_structured`` thresholds."""
    out: list[tuple[str, float]] = []
    if sig.tokens < th.min_tokens:
        out.append(("too_short", _below(sig.tokens, th.min_tokens) if sig.tokens > 0 else 1.0))
    if sig.tokens < th.min_tokens_stats:
        return out
    if form == "prose":
        checks = (("compressible", _below(sig.compression, th.max_compression)),
                  ("repetitive", _above(sig.repetition, th.max_repetition, 1.0)),
                  ("low_entropy", _below(sig.entropy_norm, th.min_entropy_norm)),
                  ("fragmented", _below(sig.words_per_sentence, th.min_words_per_sentence)),
                  ("run_on", _above(sig.words_per_sentence, th.max_words_per_sentence)),
                  ("unfamiliar", _below(sig.familiarity, th.min_familiarity)),
                  ("uncommon", _below(sig.common_share, th.min_common_share)),
                  ("scrambled", _below(sig.ordered, th.min_ordered)))
    else:
        checks = (("compressible", _below(sig.compression, th.max_compression_structured)),
                  ("repetitive", _above(sig.repetition, th.max_repetition_structured, 1.0)),
                  ("low_entropy", _below(sig.entropy_norm, th.min_entropy_norm_structured)))
    for reason, score in checks:
        if score > 0.0:
            out.append((reason, round(score, 6)))
    return out


_CODE_LINE = re.compile(
    r"^\s{2,}\S|[{};]\s*$|^\s*(#|//|/\*|\*|--|def |class |import |from \S+ import|return\b|if\b.*[:{(]|"
    r"for\b.*[:{(]|while\b|else\b|elif\b|fi\s*$|done\s*$|esac|case\b|function\b|local\b|export\b|"
    r"echo\b|typedef\b|struct\b|enum\b|static\b|const\b|void\b|int\b|unsigned\b|extern\b|"
    r"[A-Za-z_][\w.\[\]]*\s*[+\-*/]?=\s|[A-Za-z_]\w*=\S)")  # the last: a shell assignment (NAME=value)
FORM_MAX_LINES = 200


def text_form(text: str) -> str:
    """``"table"``, ``"code"`` or ``"prose"`` from the first ``FORM_MAX_LINES`` non-empty
    lines: a table when at least 4 lines and 80% of them hold the same positive number of
    one delimiter (tab, comma, semicolon, pipe), or 80% hold a tab after their indentation,
    or 90% hold between half and all of the first line's delimiters (3 or more: ragged rows)
    in fields of 16 characters or less on average; code when it starts with an interpreter
    line (``#!``), or at least 5 lines and half of them look like code (indentation, a
    trailing brace or semicolon, a comment marker, a keyword or an assignment, shell's
    ``NAME=value`` included); prose otherwise (a paragraph is one long line)."""
    if text.startswith("#!"):  # an interpreter line: a script, whatever its lines look like
        return "code"
    lines = [ln for ln in text.splitlines()[:4 * FORM_MAX_LINES] if ln.strip()][:FORM_MAX_LINES]
    data = [ln for ln in lines if not ln.lstrip().startswith("#")]
    if len(data) >= 4:
        if sum(1 for ln in data if "\t" in ln.strip(" \t")) >= 0.8 * len(data):
            return "table"  # tabs inside most lines (leading tabs are indentation)
        for delim in ("\t", ",", ";", "|"):
            counts = [ln.count(delim) for ln in data]
            top = max(set(counts), key=lambda c: (counts.count(c), c))
            if top >= 1 and counts.count(top) >= 0.8 * len(data):
                return "table"
            head = counts[0]  # ragged rows (optional trailing columns left out) of short fields
            if (head >= 3 and sum(1 for c in counts if (head + 1) // 2 <= c <= head) >= 0.9 * len(data)
                    and sum(map(len, data)) <= 16 * sum(c + 1 for c in counts)):
                return "table"
    if len(lines) >= 5 and sum(1 for ln in lines if _CODE_LINE.search(ln)) >= 0.5 * len(lines):
        return "code"
    return "prose"


def is_low_quality(reasons: list[tuple[str, float]], th: Thresholds = DEFAULT_THRESHOLDS) -> bool:
    """At least ``th.min_reasons`` reasons, or one of ``th.decisive``."""
    return len(reasons) >= th.min_reasons or any(r in th.decisive for r, _ in reasons)
