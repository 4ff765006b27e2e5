"""``rayprism convert truncate``: a Matryoshka-trained model exported at fewer dimensions (and a
Starbucks-trained one at fewer layers).

The cut is part of the model, not of the caller: a ``Dense`` module whose weights select the
leading ``dimensions`` (an identity block, no bias, no activation) goes before the final
``Normalize``, so ``serve``, ``embed`` and ``SentenceTransformer(path).encode`` all return unit
vectors of the smaller size. ``layers`` keeps the first transformer layers only, which is what a
Starbucks (layers, dimensions) pair was trained to be.
"""

from __future__ import annotations

from pathlib import Path

from rayprism.platform.errors import ConfigError


def truncate_model(model: str, output: str | Path, *, dimensions: int, layers: int | None = None) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    from rayprism.platform.files import staged_directory
    from rayprism.platform.models.source import resolve_source

    source = resolve_source(model)
    st = SentenceTransformer(source, device="cpu")
    full = int(st.get_embedding_dimension())
    if not 0 < dimensions <= full:
        raise ConfigError(f"truncate: dimensions must be in [1, {full}] for {model}, got {dimensions}")
    if layers is not None:
        _keep_layers(st[0].auto_model, layers, model)
    modules = list(st)
    while modules and isinstance(modules[-1], Normalize):
        modules.pop()
    if dimensions < full:
        cut = Dense(full, dimensions, bias=False, activation_function=torch.nn.Identity())
        with torch.no_grad():
            cut.linear.weight.copy_(torch.eye(full)[:dimensions])
        modules.append(cut)
    modules.append(Normalize())
    truncated = SentenceTransformer(modules=modules, prompts=st.prompts, default_prompt_name=st.default_prompt_name,
                                    similarity_fn_name=st.similarity_fn_name, device="cpu")
    with staged_directory(output) as staging:
        truncated.save(str(staging))
    return Path(output)


def _keep_layers(transformer, layers: int, model: str) -> None:
    """Drop the transformer's layers after the first ``layers`` (the encoder's layer list)."""
    import torch

    config = transformer.config
    total = getattr(config, "num_hidden_layers", None)
    if total is None:
        raise ConfigError(f"truncate: {model} does not say how many layers it has (num_hidden_layers)")
    if not 0 < layers <= total:
        raise ConfigError(f"truncate: layers must be in [1, {total}] for {model}, got {layers}")
    stacks = [module for module in transformer.modules()
              if isinstance(module, torch.nn.ModuleList) and len(module) == total]
    if len(stacks) != 1:
        raise ConfigError(f"truncate: cannot find the one list of {total} layers in {model}")
    stack = stacks[0]
    while len(stack) > layers:
        del stack[len(stack) - 1]
    config.num_hidden_layers = layers
