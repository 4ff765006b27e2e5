"""The trained model as a directory ``serve``, ``embed`` and ``SentenceTransformer(path)`` all load
(a reranker: ``serve`` as ``kind: reranker`` and ``CrossEncoder(path)``).

The checkpoint already holds a sentence-transformers directory (modules, pooling, normalisation,
prompts; or a CrossEncoder's); export copies it into place atomically and adds a model card
(``README.md``: base model, data, loss, metrics) and ``training.json`` (the same facts for programs,
including the Matryoshka dimensions the model was trained for).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from rayprism.platform.files import staged_directory
from rayprism.trainers.evaluation import METRICS, evaluation_label

TRAINING_RECORD = "training.json"


@dataclass
class ModelCard:
    name: str
    base_model: str
    data: dict
    loss: dict
    training: dict
    evaluations: list[dict] = field(default_factory=list)
    matryoshka_dimensions: list[int] | None = None
    starbucks: list[list[int]] | None = None
    image_text: bool = False
    reranker: bool = False
    """A cross-encoder (``objective: cross_encoder``)."""
    extra: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {
            "name": self.name, "base_model": self.base_model, "data": self.data, "loss": self.loss,
            "training": self.training, "evaluations": self.evaluations,
            "matryoshka_dimensions": self.matryoshka_dimensions, "starbucks": self.starbucks,
            "objective": "cross_encoder" if self.reranker else "bi_encoder", **self.extra,
        }

    def markdown(self) -> str:
        task = ("text-ranking" if self.reranker else "zero-shot-image-classification" if self.image_text
                else "sentence-similarity")
        tags = ["sentence-transformers", "rayprism", "ray-train",
                *(["cross-encoder", "reranker"] if self.reranker else []), "image-text" if self.image_text else task]
        if self.matryoshka_dimensions or self.starbucks:
            tags.append("matryoshka")
        front = ["---", "library_name: sentence-transformers", f"pipeline_tag: {task}",
                 f"base_model: {self.base_model}", "tags:", *(f"- {tag}" for tag in tags)]
        if self.matryoshka_dimensions:
            front.append(f"matryoshka_dimensions: {json.dumps(self.matryoshka_dimensions)}")
        if self.starbucks:
            front.append(f"starbucks_layers_dimensions: {json.dumps(self.starbucks)}")
        front.append("---")
        lines = [*front, "", f"# {self.name}", "",
                 f"Fine-tuned from `{self.base_model}` with `rayprism train` (Ray Train `TorchTrainer`, "
                 f"{self.training.get('workers', 1)} worker(s)).", ""]
        lines += ["## Data", "", *(f"- {key}: {_shown(value)}" for key, value in self.data.items()), ""]
        lines += ["## Loss", "", *(f"- {key}: {_shown(value)}" for key, value in self.loss.items()), ""]
        if self.matryoshka_dimensions:
            lines += [f"Trained for truncation to the leading {self.matryoshka_dimensions} dimensions "
                      f"(`rayprism convert truncate` exports one).", ""]
        if self.starbucks:
            lines += [f"Trained as a Starbucks 2D Matryoshka model: (layers, dimensions) {self.starbucks}.", ""]
        lines += ["## Training", "", *(f"- {key}: {_shown(value)}" for key, value in self.training.items()), ""]
        if self.evaluations:
            method = ("Each held-out query's candidates (first row: in their own order) reranked by the model's "
                      "scores, as the rayprism service's rerank stage orders them." if self.reranker else
                      "Exact dense search (cosine) of the held-out queries over the evaluation corpus, as the "
                      "rayprism service searches.")
            lines += ["## Evaluation", "", method, "",
                      "| model | step | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
            for evaluation in self.evaluations:
                metrics = evaluation["metrics"]
                lines.append(f"| {evaluation_label(evaluation)} | {evaluation['step']} | "
                             + " | ".join(f"{metrics[name]:.4f}" for name in METRICS) + " |")
            lines.append("")
        if self.reranker:
            lines += ["## Usage", "", "```yaml", "# serve.yaml: POST /v1/rerank, and the rerank stage of a search",
                      "models:", f"  - name: {self.name}", "    kind: reranker", "    source: <this directory>", "```",
                      "", "```python", "from sentence_transformers import CrossEncoder", "",
                      'model = CrossEncoder("<this directory>")',
                      'scores = model.predict([("query", "a document"), ("query", "another")])', "```", ""]
        else:
            lines += ["## Usage", "", "```yaml", "# serve.yaml", "models:", f"  - name: {self.name}",
                      "    source: <this directory>", "```", "", "```python", "from sentence_transformers import "
                      "SentenceTransformer", "", 'model = SentenceTransformer("<this directory>")', "```", ""]
        return "\n".join(lines)


def _shown(value) -> str:
    return f"`{value}`" if isinstance(value, str) else json.dumps(value)


def export_model(model_dir: str | Path, output: str | Path, card: ModelCard) -> Path:
    """Copy the checkpoint's model to ``output`` (replacing what is there) with its card and record."""
    with staged_directory(output) as staging:
        shutil.copytree(model_dir, staging, dirs_exist_ok=True)
        (staging / "README.md").write_text(card.markdown())
        (staging / TRAINING_RECORD).write_text(json.dumps(card.record(), indent=2))
    return Path(output)
