from types import SimpleNamespace as M

import pytest

from poa_stream.processors.lineage import lineage_mass


def model(method, bases=(), datanets=("d",), inherit=None):
    return M(method=method, base_models=list(bases), datanets=list(datanets), inherit=inherit)


def test_chain_pretrain_finetune_distill():
    models = {"p": model("pretrain"), "f": model("finetune", ["p"]), "d": model("distill", ["f"])}
    got = {m: round(w, 6) for m, w, _ in lineage_mass(models, "d")}
    assert got == {"d": 0.2, "f": 0.4, "p": 0.4}
    assert sum(got.values()) == pytest.approx(1.0)


def test_explicit_inherit_and_merge_without_datanets():
    models = {"a": model("pretrain"), "b": model("pretrain"),
              "m": model("merge", ["a", "b"], datanets=()), "l": model("lora", ["m"], inherit=0.25)}
    got = {m: (round(w, 6), d) for m, w, d in lineage_mass(models, "l")}
    assert got == {"l": (0.75, 0), "a": (0.125, 2), "b": (0.125, 2)}


def test_diamond_adds_paths():
    models = {"p": model("pretrain"), "x": model("finetune", ["p"]), "y": model("finetune", ["p"]),
              "z": model("merge", ["x", "y"], datanets=())}
    got = {m: round(w, 6) for m, w, _ in lineage_mass(models, "z")}
    assert got == {"x": 0.25, "y": 0.25, "p": 0.5}
