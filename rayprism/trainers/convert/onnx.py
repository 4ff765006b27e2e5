"""``rayprism convert onnx``: a text model exported to ONNX, pooling and normalisation in the graph.

The output directory is a copy of the model (still a sentence-transformers directory) plus
``onnx/model.onnx`` (fp32: ``input_ids``, ``attention_mask`` [, ``token_type_ids``] →
``sentence_embedding``, L2-normalised) and, optionally, ``onnx/model_int8.onnx``: the graph with
BERT attention fused by onnxruntime's transformer optimizer, then weights quantised to int8 per
channel (dynamic quantisation). Plain dynamic int8 of the unfused graph loses too much (cosine
≈ 0.93 to fp32 on MiniLM); per-channel quantisation of the fused graph keeps ≈ 0.99
(``../shared/notes/onnx.md``). The ``onnx`` backend (``rayprism.platform.models.onnx_backend``)
serves either file.

Export uses ``torch.onnx`` and ``onnx``/``onnxruntime`` directly: optimum's exporter pins an older
transformers than sentence-transformers 6 needs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from rayprism.platform.errors import ConfigError, MissingDependencyError

ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
INFO_FILE = "export.json"


def _require():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(f"convert onnx needs {error.name!r}: pip install 'rayprism[onnx]' "
                                     "(onnx, onnxruntime, onnxscript)") from error


def export_onnx(model: str, output: str | Path, *, int8: bool = True, opset: int = 17) -> list[Path]:
    """Write ``output`` (replacing it): the model directory plus its ONNX graph(s). Returns the graphs."""
    _require()
    import torch
    from sentence_transformers import SentenceTransformer

    from rayprism.platform.files import staged_directory
    from rayprism.platform.models.source import resolve_source

    source = resolve_source(model)
    # eager attention exports the classic BERT pattern, which onnxruntime's optimizer fuses into one
    # Attention op (SDPA's export, with its NaN guards, is left unfused and runs slower than torch)
    st = SentenceTransformer(source, device="cpu", model_kwargs={"attn_implementation": "eager"})
    st.eval()
    _check_exportable(st, source)
    tokenizer = st.tokenizer
    with_token_types = "token_type_ids" in tokenizer.model_input_names
    with staged_directory(output) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(ONNX_DIR, ".*"))
        graphs = staging / ONNX_DIR
        graphs.mkdir(exist_ok=True)
        fp32 = graphs / FP32_FILE
        _export(_Pooled(st, with_token_types), tokenizer, fp32, with_token_types, opset)
        written = [fp32]
        if int8:
            written.append(quantize_int8(fp32, graphs / INT8_FILE, st))
        config = st[0].auto_model.config
        info = {"inputs": ["input_ids", "attention_mask"] + (["token_type_ids"] if with_token_types else []),
                "output": "sentence_embedding", "normalized": True, "opset": opset,
                "dimensions": int(st.get_embedding_dimension()), "max_seq_length": st.max_seq_length,
                "model_type": config.model_type, "files": [path.name for path in written],
                "torch": torch.__version__}
        (graphs / INFO_FILE).write_text(json.dumps(info, indent=2))
    return [Path(output) / ONNX_DIR / path.name for path in written]


def _check_exportable(st, source: str) -> None:
    from sentence_transformers.sentence_transformer.modules import Pooling

    model_type = getattr(st[0].auto_model.config, "model_type", None)
    if model_type in ("clip", "siglip") or not hasattr(st[0], "auto_model"):
        raise ConfigError(f"convert onnx exports text models; {source} is a {model_type} model")
    if any(isinstance(module, Pooling) and not module.include_prompt for module in st):
        raise ConfigError(f"{source}: pooling that leaves the prompt out (include_prompt: false) needs the "
                          "prompt length as an input; convert onnx exports models that pool every token")


class _Pooled:
    """The whole sentence-transformers stack as one function of token tensors, normalised."""

    def __new__(cls, st, with_token_types: bool):
        import torch

        class Pooled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.st = st

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                features = {"input_ids": input_ids, "attention_mask": attention_mask}
                if token_type_ids is not None:
                    features["token_type_ids"] = token_type_ids
                embedding = self.st(features)["sentence_embedding"]
                return torch.nn.functional.normalize(embedding, p=2.0, dim=-1)

        return Pooled().eval()


def _export(module, tokenizer, path: Path, with_token_types: bool, opset: int) -> None:
    import torch

    sample = tokenizer(["an example input", "a second, longer example input to export"], padding=True,
                       return_tensors="pt")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_token_types else [])
    inputs = tuple(sample[name] for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["sentence_embedding"] = {0: "batch"}
    with torch.no_grad():
        # the TorchScript exporter: onnxruntime's BERT optimizer recognises its attention pattern
        torch.onnx.export(module, inputs, str(path), input_names=names, output_names=["sentence_embedding"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)


def quantize_int8(fp32: Path, target: Path, st) -> Path:
    """Fuse attention (onnxruntime's BERT optimizer) and quantise weights to int8 per channel."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    config = st[0].auto_model.config
    with tempfile.TemporaryDirectory(prefix="rayprism-onnx-") as scratch:
        fused = Path(scratch) / "fused.onnx"
        model_type = "bert" if config.model_type in ("bert", "roberta", "xlm-roberta", "distilbert",
                                                      "mpnet", "electra") else "bert"
        optimized = optimize_model(str(fp32), model_type=model_type, num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size, opt_level=1)
        optimized.save_model_to_file(str(fused))
        quantize_dynamic(
            str(fused), str(target), weight_type=QuantType.QInt8, per_channel=True,
            # the fused graph has tensors whose type the quantiser cannot infer; treat them as float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return target
