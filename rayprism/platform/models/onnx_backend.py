"""The ``onnx`` backend: text models exported by ``rayprism convert onnx``, run by onnxruntime.

The model directory is a sentence-transformers directory with ``onnx/model.onnx`` (and optionally
``onnx/model_int8.onnx``) whose graph holds the whole stack, pooling and L2 normalisation
included: token ids in, unit vectors out. Inputs are prepared as the torch backend prepares them
(the model's prompts, its fast tokenizer, its ``max_seq_length``), and ``encode`` runs length-sorted
forward passes of ``forward_batch_size``, so short inputs are not padded to long ones.

```yaml
models:
  - name: minilm-int8
    source: models/minilm-onnx        # written by: rayprism convert onnx <model> --output models/minilm-onnx
    backend: onnx
    options: {file: onnx/model_int8.onnx}
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from rayprism.platform.config.base import StrictModel
from rayprism.platform.errors import ConfigError
from rayprism.platform.models.base import Prepared
from rayprism.platform.models.text_inputs import TextPreStage, encode_texts, padded
from rayprism.platform.threads import quiet_tokenizers

if TYPE_CHECKING:
    from rayprism.platform.config.models import ModelConfig


class Options(StrictModel):
    file: str = "onnx/model.onnx"
    """The graph to run, relative to the model directory: ``onnx/model.onnx`` (fp32) or
    ``onnx/model_int8.onnx`` (int8 weights, about twice as fast on CPUs)."""


def load(config: ModelConfig, *, num_cpus: float | None):
    import onnxruntime  # noqa: F401  (ImportError here becomes the install hint)

    from rayprism.platform.models.source import resolve_source

    if config.modality != "text":
        raise ConfigError(f"model {config.name!r}: the onnx backend embeds text, not {config.modality}")
    if config.device != "cpu":
        raise ConfigError(f"model {config.name!r}: the onnx backend runs on cpu (got device {config.device!r})")
    directory = Path(resolve_source(config.source))
    options: Options = config.options
    graph = directory / options.file
    if not graph.is_file():
        raise ConfigError(f"model {config.name!r}: {graph} does not exist; export it with "
                          f"`rayprism convert onnx {config.source} --output DIR`")
    return OnnxTextEncoder(directory, graph, max_input_tokens=config.max_input_tokens,
                           forward_batch_size=config.batching.forward_batch_size,
                           threads=config.threads(num_cpus))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from error


class OnnxTextEncoder(TextPreStage):
    def __init__(self, directory: Path, graph: Path, *, max_input_tokens: int | None, forward_batch_size: int,
                 threads: int | None):
        quiet_tokenizers()
        import onnxruntime
        from tokenizers import Tokenizer

        session_options = onnxruntime.SessionOptions()
        if threads:
            session_options.intra_op_num_threads = threads
            session_options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(graph), session_options,
                                                     providers=["CPUExecutionProvider"])
        self._input_names = {item.name for item in self._session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= self._input_names:
            raise ConfigError(f"{graph}: expected inputs input_ids and attention_mask, found {sorted(self._input_names)}")
        self.dimensions = int(self._session.get_outputs()[0].shape[-1])

        sentence_config = _read_json(directory / "sentence_bert_config.json")
        tokenizer_config = _read_json(directory / "tokenizer_config.json")
        model_config = _read_json(directory / "config_sentence_transformers.json")
        model_limit = int(sentence_config.get("max_seq_length") or tokenizer_config.get("model_max_length") or 512)
        self.max_input_tokens = min(max_input_tokens or model_limit, model_limit)
        self.prompts: dict[str, str] = dict(model_config.get("prompts") or {})
        self._default_prompt_name = model_config.get("default_prompt_name")

        tokenizer_file = directory / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ConfigError(f"{directory}: the onnx backend needs a fast tokenizer (tokenizer.json)")
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_input_tokens)
        pad_token = tokenizer_config.get("pad_token")
        pad_token = pad_token.get("content") if isinstance(pad_token, dict) else pad_token
        self._pad_id = (self._tokenizer.token_to_id(pad_token) if pad_token else None) or 0
        self._pad_left = tokenizer_config.get("padding_side") == "left"
        self.vocab_size = self._tokenizer.get_vocab_size()
        self.forward_batch_size = forward_batch_size

    def _prepare_texts(self, texts: list[str], prompt: str | None, truncate: bool) -> list[Prepared[list[int]]]:
        encoded = encode_texts(self._tokenizer, texts, max_tokens=self.max_input_tokens, truncate=truncate)
        return [Prepared(ids, len(ids)) for ids in encoded]

    def _prepare_token_ids(self, ids: list[int]) -> Prepared[list[int]]:
        return Prepared(ids, len(ids))

    def encode(self, items: Sequence[Prepared[list[int]]]) -> np.ndarray:
        vectors = np.empty((len(items), self.dimensions), dtype=np.float32)
        order = sorted(range(len(items)), key=lambda i: -items[i].n_tokens)
        for start in range(0, len(order), self.forward_batch_size):
            group = order[start: start + self.forward_batch_size]
            outputs = self._session.run(None, self._pad([items[i].payload for i in group]))
            vectors[group] = outputs[0]
        return vectors

    def _pad(self, sequences: list[list[int]]) -> dict[str, np.ndarray]:
        return padded(sequences, self._pad_id, pad_left=self._pad_left,
                      token_types="token_type_ids" in self._input_names)
