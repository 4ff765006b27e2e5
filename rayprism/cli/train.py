"""``rayprism train`` (Ray Train fine-tuning) and ``rayprism convert`` (ONNX, merges, vocabulary
transfer, truncation): every command writes a model directory that ``serve`` and ``embed`` load."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rayprism.cli.common import VERBOSE_OPTION, app, fail
from rayprism.platform.errors import RayprismError


@app.command()
def train(
    job_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Training YAML (see configs/train-debian.yaml)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Model directory to write. Default: the file's output."),
    address: Optional[str] = typer.Option(
        None, help="Run on this Ray cluster (e.g. auto, or ray://head:10001). Default: $RAY_ADDRESS, else a local Ray."
    ),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Fine-tune an embedding model or a reranker on a Ray cluster of CPU or GPU workers (Ray Train).

    Reads query–document pairs with Ray Data, mines hard negatives with the base model, trains with
    in-batch negatives gathered across workers, scores held-out queries each epoch, and writes a
    sentence-transformers directory with a model card. With objective: cross_encoder it trains a
    reranker instead (binary cross-entropy on positives and hard negatives mined by the base
    bi-encoder), scored by reranking each held-out query's candidates; serve it as kind: reranker
    (configs/train-reranker-debian.yaml). The run (checkpoints, mining cache) lives in
    <checkpoints.storage_path>/<name>: running the same file again resumes from its last checkpoint.
    Relative paths in the file are relative to the file's own directory.
    """
    from rayprism.platform.config import load_train_config

    try:
        config = load_train_config(job_file, output=str(output) if output is not None else None)
        from rayprism.trainers.run import train as run_training

        summary = run_training(config, address=address, verbose=verbose, echo=typer.echo)
    except RayprismError as error:
        fail(error.message)
    typer.echo(f"trained {summary.steps} steps on {summary.pairs} pairs in {summary.seconds:.0f} s "
               f"({', '.join(f'{name[:-2]} {value:.0f} s' for name, value in summary.timings.items())})"
               + (f"; {summary.attempts} attempts" if summary.attempts > 1 else ""))
    if summary.evaluations:
        from rayprism.trainers.evaluation import METRICS, evaluation_label

        for evaluation in summary.evaluations:
            typer.echo(f"  {evaluation_label(evaluation)}: "
                       + "  ".join(f"{name} {evaluation['metrics'][name]:.4f}" for name in METRICS))
    typer.echo(f"model: {summary.output}")


convert_app = typer.Typer(
    name="convert", no_args_is_help=True,
    help="Turn a model directory into a faster or different one: onnx, merge, wechsel, truncate.",
)
app.add_typer(convert_app)


@convert_app.command("onnx")
def convert_onnx(
    model: str = typer.Argument(..., help="Model directory (or package:/hub source) to export."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write: the model plus onnx/."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also write a per-channel int8 model (onnxruntime)."),
    opset: int = typer.Option(17, help="ONNX opset."),
) -> None:
    """Export to ONNX with pooling and normalisation inside the graph (serve with backend: onnx).

    Writes OUTPUT as a copy of the model directory (still loadable by SentenceTransformer) with
    onnx/model.onnx and, with --int8, onnx/model_int8.onnx: the graph with BERT attention fused by
    onnxruntime's optimizer, then weights quantised to int8 per channel (dynamic quantisation).
    """
    try:
        from rayprism.trainers.convert.onnx import export_onnx

        written = export_onnx(model, output, int8=int8, opset=opset)
    except RayprismError as error:
        fail(error.message)
    for path in written:
        typer.echo(f"wrote {path}")


@convert_app.command("merge")
def convert_merge(
    models: List[str] = typer.Argument(..., help="Checkpoints (model directories) of one base model."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write."),
    base: Optional[str] = typer.Option(
        None, help="The base model: task vectors (model - base) are added with --weights. Without it: a uniform soup."),
    weights: Optional[str] = typer.Option(
        None, help="Comma-separated weights, one per model, for task arithmetic (negative negates a task); "
                   "default 1 each."),
) -> None:
    """Merge checkpoints of one base model: a uniform model soup, or task-vector arithmetic with --base.

    Soup: the mean of the models' weights. Task arithmetic: base + Σ weight_i × (model_i − base).
    """
    try:
        from rayprism.trainers.convert.merge import merge_models

        parsed = [float(value) for value in weights.split(",")] if weights else None
        merge_models(models, output, base=base, weights=parsed)
    except ValueError as error:
        fail(str(error))
    except RayprismError as error:
        fail(error.message)
    typer.echo(f"wrote {output}")


@convert_app.command("wechsel")
def convert_wechsel(
    model: str = typer.Argument(..., help="Source model directory."),
    tokenizer: str = typer.Option(..., help="Target tokenizer: a directory (or tokenizer.json) to transfer to."),
    source_vectors: Path = typer.Option(..., exists=True, dir_okay=False,
                                        help="Aligned word vectors of the source language (fastText .vec text)."),
    target_vectors: Path = typer.Option(..., exists=True, dir_okay=False,
                                        help="Aligned word vectors of the target language (fastText .vec text)."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write."),
    neighbours: int = typer.Option(10, help="Source tokens averaged for each target token."),
    temperature: float = typer.Option(0.1, help="Softmax temperature over the neighbours' similarities."),
) -> None:
    """Transfer a model to a new tokenizer (WECHSEL): each new token's embedding is a similarity-weighted
    mean of the source embeddings of its nearest source tokens in the aligned word-vector space."""
    try:
        from rayprism.trainers.convert.wechsel import transfer_vocabulary

        report = transfer_vocabulary(model, tokenizer, source_vectors, target_vectors, output,
                                     neighbours=neighbours, temperature=temperature)
    except RayprismError as error:
        fail(error.message)
    typer.echo(f"wrote {output}: {report.mapped} of {report.vocabulary} tokens from aligned vectors, "
               f"{report.copied} copied (same token), {report.random} initialised at random")


@convert_app.command("truncate")
def convert_truncate(
    model: str = typer.Argument(..., help="A Matryoshka- (or Starbucks-) trained model directory."),
    dimensions: int = typer.Option(..., help="Keep the leading dimensions (re-normalised)."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write."),
    layers: Optional[int] = typer.Option(None, help="Also keep only the first LAYERS transformer layers (Starbucks)."),
) -> None:
    """Export a Matryoshka-trained model at fewer dimensions (and, for Starbucks models, fewer layers)."""
    try:
        from rayprism.trainers.convert.truncate import truncate_model

        truncate_model(model, output, dimensions=dimensions, layers=layers)
    except RayprismError as error:
        fail(error.message)
    typer.echo(f"wrote {output}")
