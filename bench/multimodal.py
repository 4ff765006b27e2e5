"""Images and speech: the bare encoder against the served model and the batch job, in one run.

    python bench/multimodal.py [--images 256] [--clips 48] [--duration-s 30] [--job-images 1024]

Models are CLIP ViT-B/32 and Whisper-base at their real geometry with random (seeded) weights,
built once from transformers configs under bench/results/models/ (nothing can be downloaded here;
compute per input is what a trained checkpoint of the same shape costs). Inputs are real:
scikit-learn's handwritten digits drawn at 256×256 as PNG, and the espeak-ng speech clips in
tests/data/speech.

1. bare: in this process, the model's own processor and forward pass (``CLIPModel.get_image_features``
   on batches of 32 decoded images; Whisper's feature extractor and encoder on batches of 8 clips,
   mean-pooled), every core, best of 2 passes;
2. served: ``rayprism serve`` with both models in one replica (2 CPUs), loaded by 2 client threads
   posting 32 images (or 8 clips) per request as ``data:`` URIs to ``/v1/embeddings``;
3. job: ``rayprism embed`` over a folder of the images (or clips), parquet output, timed from
   process start to exit (Ray's start included) and by the job's own rows/s.

Prints images/s and audio-seconds/s for each, and served / bare, job / bare.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml
from services import REPO, rayprism_service, start, stop

sys.path.insert(0, str(REPO))
from tests.media_models import SPEECH, clip_tokenizer, make_whisper  # noqa: E402  (the test suite's builders)

MODELS = REPO / "bench" / "results" / "models"
IMAGES_PER_REQUEST = 32
CLIPS_PER_REQUEST = 8
CLIENTS = 2
IMAGE_SIZE = 256


# --- models and inputs --------------------------------------------------------------------


def clip_b32() -> Path:
    """CLIP ViT-B/32 geometry: 224-pixel images in 32-pixel patches, 12 layers each side, 512 dimensions."""
    directory = MODELS / "clip-vit-b32-random"
    if (directory / "config.json").exists():
        return directory
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    tokenizer = clip_tokenizer(model_max_length=77)
    config = CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                         vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=32),
        projection_dim=512,
    )
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(directory)
    CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def whisper_base() -> Path:
    """Whisper-base's encoder geometry: 80 mel bins, 30 s windows, 6 layers of width 512."""
    directory = MODELS / "whisper-base-random"
    if (directory / "config.json").exists():
        return directory
    return make_whisper(directory, width=512, layers=6, heads=8, ffn=2048)


def digit_images(count: int) -> list[bytes]:
    """Handwritten digits (scikit-learn's 8×8 scans) drawn at IMAGE_SIZE² as RGB PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits().images
    images = []
    for index in range(count):
        pixels = (digits[index % len(digits)] * (255 / 16)).astype(np.uint8)
        image = Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def speech_clips(count: int) -> list[tuple[bytes, float, str]]:
    """(file bytes, seconds of audio, file suffix) of the committed speech clips, repeated to ``count``."""
    import soundfile

    files = sorted(path for path in SPEECH.iterdir() if path.suffix in (".wav", ".flac", ".ogg"))
    clips = [(path.read_bytes(), soundfile.info(str(path)).duration, path.suffix) for path in files]
    return [clips[index % len(clips)] for index in range(count)]


AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg"}
"""The media type of each committed clip's format: the service takes audio data: URIs of an audio/* type."""


def data_uri(item: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(item).decode()}"


# --- bare -------------------------------------------------------------------------------


def best_rate(work, units: float, repeats: int = 2) -> float:
    """Units per second of the fastest of ``repeats`` passes of ``work()``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return units / best


def bare_images_per_s(model_dir: Path, images: list[bytes]) -> float:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)

    def work() -> None:
        with torch.inference_mode():
            for start_at in range(0, len(images), IMAGES_PER_REQUEST):
                batch = [Image.open(io.BytesIO(item)).convert("RGB") for item in images[start_at:start_at + IMAGES_PER_REQUEST]]
                pixels = processor(images=batch, return_tensors="pt")["pixel_values"]
                model.get_image_features(pixel_values=pixels)

    work()  # warm-up
    return best_rate(work, len(images))


def bare_audio_seconds_per_s(model_dir: Path, clips: list[tuple[bytes, float, str]]) -> float:
    import soundfile
    import soxr
    import torch
    from transformers import WhisperFeatureExtractor, WhisperModel

    encoder = WhisperModel.from_pretrained(model_dir).get_encoder().eval()
    extractor = WhisperFeatureExtractor.from_pretrained(model_dir)

    def work() -> None:
        with torch.inference_mode():
            for start_at in range(0, len(clips), CLIPS_PER_REQUEST):
                waves = []
                for item, _, _ in clips[start_at:start_at + CLIPS_PER_REQUEST]:
                    samples, rate = soundfile.read(io.BytesIO(item), dtype="float32", always_2d=True)
                    waves.append(soxr.resample(samples.mean(axis=1), rate, extractor.sampling_rate))
                features = extractor(waves, sampling_rate=extractor.sampling_rate, return_tensors="pt")
                encoder(input_features=features["input_features"]).last_hidden_state.mean(dim=1)

    work()
    return best_rate(work, sum(seconds for _, seconds, _ in clips))


# --- served -----------------------------------------------------------------------------


def check(response) -> None:
    """A refused request stops the measurement with the service's own reason, not only its status."""
    if response.is_error:
        raise RuntimeError(f"{response.status_code} from the service: {response.text[:500]}")


def served_rate(url: str, bodies: list[dict], units_per_body: list[float], duration_s: float) -> float:
    """Units per second answered by CLIENTS threads posting ``bodies`` round-robin for ``duration_s``."""
    import httpx

    done = [0.0] * CLIENTS
    failures: list[Exception] = []

    def client(slot: int) -> None:
        try:
            post_until_deadline(slot)
        except Exception as error:  # the measurement is void: say why once every client has stopped
            failures.append(error)

    def post_until_deadline(slot: int) -> None:
        with httpx.Client(timeout=600) as http:
            index = slot
            while time.monotonic() < deadline:
                check(http.post(url, json=bodies[index % len(bodies)]))
                done[slot] += units_per_body[index % len(bodies)]
                index += CLIENTS

    with httpx.Client(timeout=600) as http:  # warm-up: the first batches pay one-off costs
        check(http.post(url, json=bodies[0]))
    started = time.monotonic()
    deadline = started + duration_s  # read by the clients: the warm-up is not part of the measurement
    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"served measurement failed: {failures[0]}")
    return sum(done) / (time.monotonic() - started)


def serve_config(clip: Path, whisper: Path, work: Path) -> Path:
    config = {
        "deployment": {"num_cpus": 2},
        "store": {"uri": str(work / "store.db")},
        "models": [
            {"name": "clip", "modality": "image", "source": str(clip),
             "batching": {"max_batch_size": 64, "forward_batch_size": IMAGES_PER_REQUEST}},
            {"name": "whisper", "modality": "audio", "source": str(whisper), "max_audio_seconds": 30,
             "batching": {"forward_batch_size": CLIPS_PER_REQUEST}},
        ],
    }
    path = work / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- batch job --------------------------------------------------------------------------


def job_rate(folder: Path, model_dir: Path, modality: str, batch_size: int, work: Path) -> tuple[float, float]:
    """(rows/s from process start to exit, rows/s the job reports) of ``rayprism embed`` over ``folder``."""
    job = {
        "input": {"path": str(folder), "format": "images" if modality == "image" else "audio"},
        "model": {"name": modality, "source": str(model_dir), "modality": modality, "max_audio_seconds": 30},
        "compute": {"batch_size": batch_size, "num_cpus": 2, "rows_per_part": 256},
        "output": {"parquet": str(work / f"out-{modality}")},
    }
    path = work / f"job-{modality}.yaml"
    path.write_text(yaml.safe_dump(job))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "rayprism.cli", "embed", str(path)], capture_output=True,
                            text=True, cwd=REPO)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"rayprism embed failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    reported = re.search(r"embedded (\d+) rows in [\d.]+ s \(([\d.]+) rows/s\)", result.stdout)
    if reported is None:
        raise SystemExit(f"no summary line in rayprism embed's output:\n{result.stdout[-2000:]}")
    return int(reported.group(1)) / elapsed, float(reported.group(2))


def write_files(items: list[tuple[bytes, str]], folder: Path) -> Path:
    """Each (bytes, suffix) as one numbered file of ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, (item, suffix) in enumerate(items):
        (folder / f"{index:05d}{suffix}").write_bytes(item)
    return folder


# --- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="images per bare pass and served request pool")
    parser.add_argument("--clips", type=int, default=48, help="speech clips per bare pass and served request pool")
    parser.add_argument("--job-images", type=int, default=1024, help="images the batch job embeds")
    parser.add_argument("--job-clips", type=int, default=192, help="clips the batch job embeds")
    parser.add_argument("--duration-s", type=float, default=30, help="seconds of load per served measurement")
    parser.add_argument("--port", type=int, default=8124)
    args = parser.parse_args()

    clip, whisper = clip_b32(), whisper_base()
    images, clips = digit_images(args.images), speech_clips(args.clips)
    audio_seconds = [seconds for _, seconds, _ in clips]
    print(f"{len(images)} images of {IMAGE_SIZE}², {len(clips)} clips ({sum(audio_seconds):.1f} s of speech)", flush=True)

    import torch

    torch.set_num_threads(2)
    bare = {"image": bare_images_per_s(clip, images), "audio": bare_audio_seconds_per_s(whisper, clips)}
    print(f"bare: {bare['image']:.1f} images/s, {bare['audio']:.1f} audio-s/s", flush=True)

    with tempfile.TemporaryDirectory(prefix="rayprism-bench-mm-") as scratch:
        work = Path(scratch)
        service = rayprism_service("rayprism", serve_config(clip, whisper, work), args.port)
        process = start(service, work / "serve.log")
        try:
            url = service.url(service.embeddings_path)
            image_bodies = [{"model": "clip", "modality": "image",
                             "input": [data_uri(item, "image/png") for item in images[at:at + IMAGES_PER_REQUEST]]}
                            for at in range(0, len(images), IMAGES_PER_REQUEST)]
            clip_bodies, clip_seconds = [], []
            for at in range(0, len(clips), CLIPS_PER_REQUEST):
                chunk = clips[at:at + CLIPS_PER_REQUEST]
                clip_bodies.append({"model": "whisper", "modality": "audio",
                                    "input": [data_uri(item, AUDIO_TYPES[suffix]) for item, _, suffix in chunk]})
                clip_seconds.append(sum(seconds for _, seconds, _ in chunk))
            served = {
                "image": served_rate(url, image_bodies, [len(body["input"]) for body in image_bodies], args.duration_s),
                "audio": served_rate(url, clip_bodies, clip_seconds, args.duration_s),
            }
        finally:
            stop(process)
        print(f"served: {served['image']:.1f} images/s, {served['audio']:.1f} audio-s/s", flush=True)

        job_images = write_files([(item, ".png") for item in digit_images(args.job_images)], work / "images")
        job_clips = speech_clips(args.job_clips)
        job_audio = write_files([(item, suffix) for item, _, suffix in job_clips], work / "audio")
        image_end_to_end, image_reported = job_rate(job_images, clip, "image", IMAGES_PER_REQUEST, work)
        clip_end_to_end, clip_reported = job_rate(job_audio, whisper, "audio", CLIPS_PER_REQUEST, work)
        seconds_per_clip = sum(seconds for _, seconds, _ in job_clips) / len(job_clips)
        job = {"image": (image_end_to_end, image_reported),
               "audio": (clip_end_to_end * seconds_per_clip, clip_reported * seconds_per_clip)}

    print()
    print("| input | bare | served (32 images or 8 clips per request) | served / bare | job, end to end | job, as reported | job (reported) / bare |")
    print("|---|---|---|---|---|---|---|")
    for modality, unit in (("image", "images/s"), ("audio", "audio-s/s")):
        end_to_end, reported = job[modality]
        print(f"| {modality} | {bare[modality]:.1f} {unit} | {served[modality]:.1f} | "
              f"**{served[modality] / bare[modality]:.2f}** | {end_to_end:.1f} | {reported:.1f} | "
              f"{reported / bare[modality]:.2f} |")


if __name__ == "__main__":
    main()
