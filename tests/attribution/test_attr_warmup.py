"""attribution.warmup: every kernel compiled once, production calls add no signature."""
import subprocess
import sys

CHECK = r"""
import importlib, json
from numba.core.registry import CPUDispatcher
from poa_stream.attribution import warmup
secs = warmup()
mods = [importlib.import_module("poa_stream.attribution." + m) for m in
        ("text", "shingles", "minhash", "lsh", "vocab", "span_kernels", "split")]
def table():
    out = {}
    for m in mods:
        for name, f in vars(m).items():
            if isinstance(f, CPUDispatcher) and f.__module__ == m.__name__ \
                    and f.targetoptions.get("inline", "never") == "never":
                out[m.__name__ + "." + name] = len(f.signatures)
    return out
before = table()
ENTRY = ["text.tokenize_utf8", "text.sequence_hash", "text.hash_words", "shingles.shingles",
         "shingles.shingles_batch", "minhash.sketch", "minhash.sketch_batch",
         "minhash.sketch_tokens_batch", "lsh.band_keys", "lsh.table_insert", "lsh.table_query",
         "lsh.table_rehash", "vocab.vocab_ids", "vocab.vocab_add",
         "vocab.vocab_rehash", "span_kernels.build_main", "span_kernels.mem_insert",
         "span_kernels.find_spans", "span_kernels.attribute_matches", "split.split_quantized"]
# a production-like sequence with the caller's own types, growing every table
import numpy as np
words = " ".join(f"w{i}" for i in range(3000))
from poa_stream.attribution.text import token_hashes, content_hash
from poa_stream.attribution.shingles import shingles
from poa_stream.attribution.lsh import NearDupIndex
from poa_stream.attribution.spans import NgramIndex, SpanIndex, allowed_mask_from
from poa_stream.attribution.split import split_amount
nd, idx, old = NearDupIndex(), SpanIndex(8), NgramIndex(8)
for i, text in enumerate(["Ein Vertrag über die Lieferung von Äpfeln und Birnen an Köln " * 3,
                          "the quick brown fox jumps over the lazy dog again and again " * 3]
                         + [words[i * 300:i * 300 + 2000] for i in range(6)]):
    t = token_hashes(text); content_hash(text)
    nd.check_and_add(i, shingles(t)); idx.add(i, t); old.add(i, t)
idx.attribute(token_hashes("the quick brown fox jumps over the lazy dog again"), allowed_mask_from([0, 1], 2))
old.attribute(token_hashes("the quick brown fox jumps over the lazy dog again"), {1})
split_amount(10**6, np.asarray([0.2, 0.8])); split_amount(10**6, np.asarray([7000, 2000], dtype=np.int64))
after = table()
print(json.dumps({"secs": secs, "uncompiled": [k for k in ENTRY if before["poa_stream.attribution." + k] == 0],
                  "recompiled": [k for k in after if after[k] != before[k]]}))
"""


def test_warmup_compiles_everything_once():
    import json
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["secs"] > 0
    assert res["uncompiled"] == []
    assert res["recompiled"] == []
