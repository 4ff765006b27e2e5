"""``rayprism convert merge``: checkpoints of one base model merged in weight space.

* A uniform **model soup** (Wortsman et al., 2022): the mean of the models' weights.
* **Task arithmetic** (Ilharco et al., 2023): ``base + Σ weight_i × (model_i − base)``; a task
  vector is what fine-tuning added to the base, a negative weight removes a task.

Models must share one architecture (the same parameter names and shapes); integer buffers (e.g.
position ids) must be equal and are copied. The result is saved like its first input (modules,
tokenizer, prompts), so it serves and loads as that model does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from rayprism.platform.errors import ConfigError


def merge_state_dicts(states: Sequence[dict], *, base: dict | None = None,
                      weights: Sequence[float] | None = None) -> dict:
    """The merged weights: a uniform soup without ``base``; task arithmetic with it."""
    import torch

    if not states:
        raise ConfigError("merge needs at least one model")
    if weights is not None and len(weights) != len(states):
        raise ConfigError(f"merge: {len(weights)} weights for {len(states)} models; give one weight per model")
    if weights is not None and base is None:
        raise ConfigError("merge: weights apply to task vectors; give --base, or leave weights out for a uniform soup")
    reference = base if base is not None else states[0]
    for index, state in enumerate(states):
        _check_compatible(reference, state, f"model {index + 1}")
    merged = {}
    for name, value in reference.items():
        if not torch.is_floating_point(value):
            for index, state in enumerate(states):
                if not torch.equal(state[name], value):
                    raise ConfigError(f"merge: non-float tensor {name!r} differs in model {index + 1}")
            merged[name] = value.clone()
            continue
        values = [state[name].double() for state in states]
        if base is None:
            merged[name] = (sum(values) / len(values)).to(value.dtype)
        else:
            origin = value.double()
            task_weights = weights or [1.0] * len(states)
            merged[name] = (origin + sum(w * (v - origin) for w, v in zip(task_weights, values))).to(value.dtype)
    return merged


def _check_compatible(reference: dict, state: dict, label: str) -> None:
    missing = sorted(set(reference) ^ set(state))
    if missing:
        raise ConfigError(f"merge: {label} has different parameters than the first (e.g. {missing[0]!r}); "
                          "merge checkpoints of one base model")
    for name, value in reference.items():
        if state[name].shape != value.shape:
            raise ConfigError(f"merge: {label}'s {name!r} has shape {tuple(state[name].shape)}, "
                              f"not {tuple(value.shape)}")


def merge_models(models: Sequence[str], output: str | Path, *, base: str | None = None,
                 weights: Sequence[float] | None = None) -> Path:
    """Load the models (sentence-transformers directories), merge, save to ``output``."""
    from sentence_transformers import SentenceTransformer

    from rayprism.platform.files import staged_directory
    from rayprism.platform.models.source import resolve_source

    sources = [resolve_source(model) for model in models]
    loaded = [SentenceTransformer(source, device="cpu") for source in sources]
    base_model = SentenceTransformer(resolve_source(base), device="cpu") if base is not None else None
    merged = merge_state_dicts([model.state_dict() for model in loaded],
                               base=base_model.state_dict() if base_model is not None else None, weights=weights)
    target = loaded[0]
    target.load_state_dict(merged)
    with staged_directory(output) as staging:
        target.save(str(staging))
        record = {"method": "task arithmetic" if base is not None else "uniform soup", "models": list(models),
                  "base": base, "weights": list(weights) if weights is not None else None}
        (staging / "merge.json").write_text(json.dumps(record, indent=2))
    return Path(output)
