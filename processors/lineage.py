"""How a usage event's attribution flows through model lineage.

A usage of model M starts with mass 1 at M. Each model m keeps ``1 - inherit(m)`` of the
mass reaching it for the contributions of *its own* datanets and passes ``inherit(m)``
up to its ``base_models``, split equally; a model with no base keeps everything, and a
model with no datanets of its own (a typical merge) passes everything up. Mass reaching
a model through several paths adds up. ``inherit`` comes from the model event, else
from the method's default:

| method   | default inherit | why |
|----------|-----------------|-----|
| pretrain | 0.0 | trained from scratch on its datanets |
| finetune | 0.5 | its data shapes it as much as its base does |
| lora     | 0.7 | a small adapter: most behaviour is the base's |
| distill  | 0.8 | learns the teacher's outputs: attribution goes mostly to the teacher's data |
| merge    | 1.0 | no training data of its own |

Returns ``(model_id, mass, depth)`` per model with mass kept > 0, in breadth-first order
(depth 0 = the used model); the kept masses sum to 1 when every path ends in a model
with datanets, less otherwise (the caller redistributes or pays the treasury).
"""
from __future__ import annotations

DEFAULT_INHERIT = {"pretrain": 0.0, "finetune": 0.5, "lora": 0.7, "distill": 0.8, "merge": 1.0}


def inherit_of(model, defaults: dict[str, float] = DEFAULT_INHERIT) -> float:
    return model.inherit if model.inherit is not None else defaults.get(model.method, 0.0)


def lineage_mass(models: dict, model_id: str,
                 defaults: dict[str, float] = DEFAULT_INHERIT) -> list[tuple[str, float, int]]:
    order: list[str] = []
    depth: dict[str, int] = {model_id: 0}
    incoming: dict[str, float] = {model_id: 1.0}
    # topological pass from the used model towards its ancestors (a DAG: a model's bases
    # are registered before it, so there are no cycles)
    indeg: dict[str, int] = {}
    stack, seen = [model_id], {model_id}
    while stack:
        m = stack.pop()
        for b in models[m].base_models:
            indeg[b] = indeg.get(b, 0) + 1
            if b not in seen:
                seen.add(b)
                stack.append(b)
    ready = [model_id]
    kept: dict[str, float] = {}
    while ready:
        m = ready.pop(0)
        order.append(m)
        model = models[m]
        mass = incoming.get(m, 0.0)
        bases = list(dict.fromkeys(model.base_models))
        share = 0.0 if not bases else (1.0 if not model.datanets else inherit_of(model, defaults))
        kept[m] = mass * (1.0 - share)
        for b in bases:
            incoming[b] = incoming.get(b, 0.0) + mass * share / len(bases)
            depth[b] = max(depth.get(b, 0), depth[m] + 1)
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
    return [(m, kept[m], depth[m]) for m in order if kept[m] > 0]
