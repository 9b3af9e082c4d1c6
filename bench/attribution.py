"""Attribution engine benchmark: MinHash sketching and span matching, with anchors.

    python bench/attribution.py [--quick] [--seed N]

Prints one table. Every ratio compares rows of this run on the same inputs. All rows
are single-threaded (rensa's Rayon pool is pinned to one thread). --quick: ~1M indexed
tokens, fewer documents, no cold-compile measurement (< 1 minute); the full run indexes
10M tokens (20k documents x 500 tokens, Zipfian vocabulary) and measures numba's cold
compile in a subprocess with an empty cache directory.
"""
from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before rensa loads: one core for everyone

import argparse  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poa_stream.attribution import warmup  # noqa: E402
from poa_stream.attribution.minhash import MinHasher, sketch_batch  # noqa: E402
from poa_stream.attribution.shingles import ngram_hashes, shingles_batch  # noqa: E402
from poa_stream.attribution.spans import SpanIndex  # noqa: E402
from poa_stream.attribution.text import normalize, token_hashes, token_hashes_batch  # noqa: E402

ROWS: list[tuple[str, str, str, str, str]] = []


def row(bench, method, value, unit, note=""):
    ROWS.append((bench, method, value, unit, note))


def fmt(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e4 else f"{x:,.1f}"


def best_of(fn, reps=3) -> float:
    """Fastest of ``reps`` wall-clock runs of fn() in seconds (the box is shared)."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# ------------------------------------------------------------------ inputs
def zipf_sampler(rng, vocab: int, a: float = 1.05):
    cdf = np.cumsum(1.0 / np.arange(1, vocab + 1) ** a)
    cdf /= cdf[-1]
    return lambda n: np.minimum(np.searchsorted(cdf, rng.random(n)), vocab - 1)


def make_texts(rng, n_docs: int) -> list[str]:
    """Mixed German/French/English-looking text: accents, capitals, punctuation."""
    syl = ["ka", "ri", "ver", "trä", "ge", "lo", "mé", "an", "schu", "ß", "ton", "ça", "de",
           "in", "the", "ou", "ei", "zu", "ri", "é", "ün", "st", "ra", "bo", "l'"]
    words = []
    for _ in range(20_000):
        w = "".join(rng.choice(syl, int(rng.integers(1, 4))))
        words.append(w.capitalize() if rng.random() < 0.1 else w)
    words = np.asarray(words)
    draw = zipf_sampler(rng, len(words))
    texts = []
    for _ in range(n_docs):
        ws = words[draw(int(rng.integers(200, 500)))].tolist()
        for i in rng.choice(len(ws), len(ws) // 12, replace=False):
            ws[i] += rng.choice([",", ".", ";", " -", "!"])
        texts.append(" ".join(ws))
    return texts


_WORD = re.compile(r"[^\W_]+")


def py_words(text: str) -> list[str]:
    """The words of ``normalize(text)`` for these texts (letters, apostrophes,
    punctuation), the fastest way plain Python has: NFKC + casefold + a regex."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def py_shingles(text: str, k: int = 5) -> list[str]:
    w = py_words(text)
    return [" ".join(w[i:i + k]) for i in range(len(w) - k + 1)] if len(w) >= k else [" ".join(w)]


# ------------------------------------------------------------------ minhash
def bench_minhash(texts: list[str]) -> None:
    import datasketch
    import rensa

    n = len(texts)
    if any(py_words(t) != normalize(t).split() for t in texts[:50]):
        raise RuntimeError("py_words must tokenize like attribution.text.normalize")
    fss, classic = MinHasher(128, 1, "fss"), MinHasher(128, 1, "classic")
    flat, offs = token_hashes_batch(texts)
    sh, so = shingles_batch(flat, offs, 5)
    strs = [py_shingles(t) for t in texts]
    byts = [[s.encode() for s in doc] for doc in strs]
    sh_u64 = [sh[so[i]:so[i + 1]] for i in range(n)]

    def ours_stream(h):
        return lambda: [h.signature(token_hashes(t)) for t in texts]

    def ds_update(docs):
        for d in docs:
            m = datasketch.MinHash(num_perm=128)
            m.update_batch(d)
            m.digest()

    def rensa_doc(docs):
        for d in docs:
            m = rensa.RMinHash(128, 42)
            m.update(d)
            m.digest()

    rm = rensa.RMinHash
    pm = MinHasher(128, 7, "classic")

    def numpy_ref(docs):
        a = (pm.perm[0].astype(np.uint64) | pm.perm[1].astype(np.uint64) << np.uint64(32))[:, None]
        b = (pm.perm[2].astype(np.uint64) | pm.perm[3].astype(np.uint64) << np.uint64(32))[:, None]
        for x in docs:
            x32 = (x ^ (x >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
            ((a * x32[None, :] + b) >> np.uint64(32)).min(axis=1).astype(np.uint32)

    cases = [  # name, from text (tokenize + shingle + sketch), sketch only (prepared input)
        ("ours fss, batch", lambda: fss.batch_texts(texts),
         lambda: sketch_batch(sh, so, fss.perm, fss.rounds, True)),
        ("ours fss, per document", ours_stream(fss),
         lambda: [fss.signature_shingles(x) for x in sh_u64]),
        ("ours classic, batch", lambda: classic.batch_texts(texts),
         lambda: sketch_batch(sh, so, classic.perm, classic.rounds, False)),
        ("rensa RMinHash, per document", lambda: rensa_doc([py_shingles(t) for t in texts]),
         lambda: rensa_doc(strs)),
        ("rensa digest_matrix (bulk)", lambda: rm.digest_matrix_from_token_sets(
            [py_shingles(t) for t in texts], 128, 42),
         lambda: rm.digest_matrix_from_flat_token_hashes(sh, so.astype(np.uint64), 128, 42)),
        ("datasketch update_batch", lambda: ds_update([[s.encode() for s in py_shingles(t)]
                                                       for t in texts]),
         lambda: ds_update(byts)),
        ("datasketch MinHash.bulk", lambda: datasketch.MinHash.bulk(
            [[s.encode() for s in py_shingles(t)] for t in texts], num_perm=128),
         lambda: datasketch.MinHash.bulk(byts, num_perm=128)),
        ("numpy reference (classic)", lambda: numpy_ref(
            [shingles_batch(*token_hashes_batch([t]), 5)[0] for t in texts]),
         lambda: numpy_ref(sh_u64)),
    ]
    rates = {}
    for name, from_text, only in cases:
        reps = 1 if name.startswith(("datasketch", "numpy")) else 3
        rates[name] = (n / best_of(from_text, reps), n / best_of(only, reps) if only else None)
    base = rates["datasketch update_batch"][0]
    rensa_rate = rates["rensa RMinHash, per document"][0]
    for name, (rt, ro) in rates.items():
        note = (f"{rt / base:.1f}x datasketch, {rt / rensa_rate:.2f}x rensa; sketch only "
                f"{fmt(ro)} docs/s" if ro else f"{rt / base:.1f}x datasketch")
        row("minhash (128 slots)", name, fmt(rt), "docs/s from text", note)
    row("minhash (128 slots)", "input", f"{n}", "docs",
        f"{len(sh) / n:.0f} word 5-gram shingles/doc; from text = NFKC, casefold, words, "
        "5-grams, sketch; rensa/datasketch get the same shingles as strings/bytes")


# ------------------------------------------------------------------ spans
class DictNgramIndex:
    """Plain-Python anchor: n-gram hash -> [doc ids]; covered tokens shared per doc."""

    def __init__(self, n):
        self.n, self.post = n, defaultdict(list)

    def add(self, d, toks):
        for g in set(ngram_hashes(toks, self.n).tolist()):
            self.post[g].append(d)

    def attribute(self, toks, allowed):
        cover = defaultdict(set)
        for i, g in enumerate(ngram_hashes(toks, self.n).tolist()):
            for d in self.post.get(g, ()):
                if allowed[d]:
                    cover[d].update(range(i, i + self.n))
        return sorted(cover)


def rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_span(index, docs, queries, mask):
    t = time.perf_counter()
    for d, toks in enumerate(docs):
        index.add(d, toks)
    build = time.perf_counter() - t
    lat = []
    for q in queries:
        t = time.perf_counter()
        index.attribute(q, mask)
        lat.append(time.perf_counter() - t)
    lat = np.asarray(lat)
    return sum(map(len, docs)) / build, sum(map(len, queries)) / lat.sum(), lat


def bench_spans(rng, n_docs: int, n_queries: int, ref_tokens: int) -> None:
    vocab = 50_000
    words = rng.integers(0, 2**63, vocab, dtype=np.uint64)
    draw = zipf_sampler(rng, vocab)
    flat = words[draw(n_docs * 500)]
    docs = [flat[i * 500:(i + 1) * 500] for i in range(n_docs)]

    def output():
        parts, m = [], 0
        while m < 500:  # half copied spans of 10-60 tokens, half fresh Zipfian text
            if rng.random() < 0.5:
                d, s = int(rng.integers(n_docs)), int(rng.integers(0, 440))
                parts.append(docs[d][s:s + int(rng.integers(10, 60))])
            else:
                parts.append(words[draw(int(rng.integers(5, 40)))])
            m += len(parts[-1])
        return np.concatenate(parts)[:500]

    queries = [output() for _ in range(n_queries)]
    mask = rng.random(n_docs) < 0.8
    idx = SpanIndex(8)
    b_rate, q_rate, lat = run_span(idx, docs, queries, mask)
    tok = idx.n_tokens
    row("span match (n=8)", f"ours SpanIndex, {fmt(tok)} tokens", fmt(q_rate), "output tokens/s",
        f"p50 {np.percentile(lat, 50) * 1e3:.2f} ms, p99 {np.percentile(lat, 99) * 1e3:.2f} ms "
        "per 500-token output")
    row("span match (n=8)", "ours index build", fmt(b_rate), "tokens/s", "add() one doc at a time")
    row("span match (n=8)", "ours index memory", f"{idx.bytes_per_token():.2f}", "bytes/token",
        f"{idx.nbytes / 2**20:.0f} MiB numpy arrays, streaming state (memtable included)")
    k = max(1, ref_tokens // 500)
    small = SpanIndex(8)
    _, q_small, lat_small = run_span(small, docs[:k], queries, mask)
    r0 = rss()
    ref = DictNgramIndex(8)
    rb, rq, rlat = run_span(ref, docs[:k], queries, mask)
    row("span match (n=8)", f"ours SpanIndex, {fmt(k * 500)} tokens", fmt(q_small),
        "output tokens/s", f"p99 {np.percentile(lat_small, 99) * 1e3:.2f} ms; "
        f"{q_small / rq:.0f}x the dict anchor")
    row("span match (n=8)", f"python dict n-grams, {fmt(k * 500)} tokens", fmt(rq),
        "output tokens/s", f"p99 {np.percentile(rlat, 99) * 1e3:.2f} ms; build {fmt(rb)} "
        f"tokens/s; ~{(rss() - r0) / (k * 500):.0f} bytes/token (RSS)")


# ------------------------------------------------------------------ warm-up
def bench_warmup(cold: bool) -> None:
    code = "from poa_stream.attribution import warmup; print(warmup())"
    root = str(Path(__file__).resolve().parents[1])
    if cold:
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, NUMBA_CACHE_DIR=tmp, PYTHONPATH=root)
            secs = []
            for _ in range(2):
                out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                     capture_output=True, text=True, cwd=root).stdout
                secs.append(float(out.split()[-1]))
        row("numba warm-up", "first compile (empty cache)", f"{secs[0]:.1f}", "s", "subprocess")
        row("numba warm-up", "from cache (new process)", f"{secs[1]:.2f}", "s", "subprocess")
    row("numba warm-up", "warmup() in this process", f"{warmup():.2f}", "s",
        "cache loaded" + (", cold compile skipped (--quick)" if not cold else ""))


def print_table() -> None:
    head = ("bench", "method", "value", "unit", "notes")
    widths = [max(len(str(r[i])) for r in ROWS + [head]) for i in range(5)]
    line = "  ".join("-" * w for w in widths)
    print(line)
    for r in [head] + ROWS:
        print("  ".join(str(c).rjust(w) if i == 2 else str(c).ljust(w)
                        for i, (c, w) in enumerate(zip(r, widths))))
        if r is head:
            print(line)
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~1M tokens, < 1 minute")
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    bench_warmup(cold=not args.quick)
    bench_minhash(make_texts(rng, 500 if args.quick else 2000))
    if args.quick:
        bench_spans(rng, n_docs=2_000, n_queries=300, ref_tokens=1_000_000)
    else:
        bench_spans(rng, n_docs=20_000, n_queries=1_000, ref_tokens=2_000_000)
    print_table()
    print(f"seed {args.seed}, {'quick' if args.quick else 'full'} run, "
          f"{time.perf_counter() - t0:.0f} s, single-threaded, {os.cpu_count()} CPUs on the box")


if __name__ == "__main__":
    main()
