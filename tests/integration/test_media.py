"""Images and speech through the running service: embeddings, collections searched by example and by
text, batch jobs over folders of files, and every media mistake answered with a 4xx."""

import base64
import json

import httpx
import numpy as np
import pytest

from rayprism.jobs.embed import execute, plan
from rayprism.platform.config import JobConfig, ModelConfig
from rayprism.platform.models.registry import load_encoder
from tests.conftest import cosines
from tests.integration.test_errors import assert_openai_error
from tests.media_models import bomb_png, digit_pngs, speech_clips, wav_bytes

DIGITS = digit_pngs(24)
CLIPS = speech_clips()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def images(count: int = 24) -> list[str]:
    return [data_uri(png, "image/png") for png in DIGITS[:count]]


def clips() -> dict[str, str]:
    mime = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg"}
    return {name: data_uri(data, mime[name[name.rindex("."):]]) for name, data in CLIPS.items()}


def embed(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json=body, timeout=120)


@pytest.fixture(scope="module")
def local_encoders(service_config):
    """The same model directories loaded in this process: the reference the served vectors must match."""
    return {model.name: load_encoder(ModelConfig.model_validate(model.model_dump()))
            for model in service_config.models if model.name in ("clip", "whisper")}


def test_one_service_embeds_text_images_and_audio_each_with_its_model(service_url, local_encoders):
    text = embed(service_url, model="minilm", input="a red bicycle").json()
    assert len(text["data"][0]["embedding"]) == 384
    pictures = embed(service_url, model="clip", modality="image", input=images(8)).json()
    assert pictures["object"] == "list" and [item["index"] for item in pictures["data"]] == list(range(8))
    expected = local_encoders["clip"].encode(local_encoders["clip"].prepare(images(8), "image"))
    assert cosines([item["embedding"] for item in pictures["data"]], expected).min() >= 0.9999
    captions = embed(service_url, model="clip", input=["a handwritten seven"]).json()  # the text tower
    assert len(captions["data"][0]["embedding"]) == len(pictures["data"][0]["embedding"])
    speech = list(clips().values())
    heard = embed(service_url, model="whisper", modality="audio", input=speech, encoding_format="base64").json()
    served = [np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in heard["data"]]
    reference = local_encoders["whisper"].encode(local_encoders["whisper"].prepare(speech, "audio"))
    assert cosines(served, reference).min() >= 0.9999
    alone = embed(service_url, model="whisper", modality="audio", input=speech[0]).json()["data"][0]["embedding"]
    assert cosines([alone], served[:1]).min() >= 0.99999  # the same vector alone or in a batch


def test_models_list_what_they_embed(service_url):
    models = {m["id"]: m for m in httpx.get(f"{service_url}/v1/models", timeout=30).json()["data"]}
    assert models["clip"]["modalities"] == ["image", "text"] and models["clip"]["modality"] == "image"
    assert models["whisper"]["modalities"] == ["audio"] and models["minilm"]["modalities"] == ["text"]


@pytest.mark.parametrize("body, status, fragment, param", [
    ({"model": "clip", "modality": "image", "input": ["data:image/png;base64,not-base64!"]}, 400, "base64", "input[0]"),
    ({"model": "clip", "modality": "image", "input": ["data:image/png;base64," + base64.b64encode(b"junk").decode()]},
     400, "not an image", "input[0]"),
    ({"model": "clip", "modality": "image", "input": [data_uri(bomb_png(), "image/png")]}, 400, "pixels", "input[0]"),
    ({"model": "clip", "modality": "image", "input": ["https://example.com/cat.png"]}, 400, "URL", "input[0]"),
    ({"model": "minilm", "modality": "image", "input": ["data:image/png;base64,AAAA"]}, 400, "not image", "modality"),
    ({"model": "whisper", "input": ["hello"]}, 400, "not text", "modality"),
    ({"model": "whisper", "modality": "audio", "input": [data_uri(wav_bytes(np.zeros(16000 * 12), 16000), "audio/wav")]},
     400, "10", "input[0]"),
])
def test_media_mistakes_are_4xx(service_url, body, status, fragment, param):
    assert_openai_error(embed(service_url, **body), status, fragment, param)


def test_an_image_collection_is_searched_by_example_and_by_text(service_url):
    spec = {"name": "digits", "model": "clip", "modality": "image", "fields": {"label": "int64"}, "bm25": False}
    assert httpx.post(f"{service_url}/v1/collections", json=spec, timeout=60).status_code in (200, 201)
    documents = [{"id": f"d{i}", "image": uri, "label": i % 10} for i, uri in enumerate(images())]
    written = httpx.post(f"{service_url}/v1/collections/digits/documents", json={"documents": documents}, timeout=120)
    assert written.status_code == 200 and written.json()["upserted"] == len(documents)
    stored = httpx.get(f"{service_url}/v1/collections/digits/documents/d3", timeout=30).json()
    assert stored["label"] == 3 and "image" not in stored  # embedded, not stored
    for index in (0, 5, 17):
        body = {"query": {"image": documents[index]["image"]}, "k": 3}
        hits = httpx.post(f"{service_url}/v1/collections/digits/search", json=body, timeout=60).json()["results"]
        assert hits[0]["id"] == f"d{index}" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    by_text = httpx.post(f"{service_url}/v1/collections/digits/search", json={"query": "a handwritten seven", "k": 5},
                         timeout=60)
    assert by_text.status_code == 200 and len(by_text.json()["results"]) == 5
    wrong = httpx.post(f"{service_url}/v1/collections/digits/search", json={"query": {"audio": clips()["seven.wav"]}},
                       timeout=60)
    assert_openai_error(wrong, 400, "holds image", "query")
    bad = [documents[0], {"id": "x", "image": "data:image/png;base64,AAAA"}, {"id": "y"}]
    refused = httpx.post(f"{service_url}/v1/collections/digits/documents", json={"documents": bad}, timeout=60)
    assert refused.status_code == 400 and "nothing was written" in refused.json()["error"]["message"]
    problems = refused.json()["error"]["errors"]
    assert [(p["index"], p["field"]) for p in problems] == [(1, "image"), (2, "image")]
    assert "not an image" in problems[0]["message"] and "data: URI" in problems[1]["message"]


def test_an_audio_collection_finds_each_clip_by_example(service_url):
    spec = {"name": "speech", "model": "whisper", "modality": "audio", "media_field": "clip",
            "fields": {"file": "varchar"}, "bm25": True}
    assert httpx.post(f"{service_url}/v1/collections", json=spec, timeout=60).status_code in (200, 201)
    documents = [{"id": name, "clip": uri, "file": name, "text": name.split(".")[0].replace("_", " ")}
                 for name, uri in clips().items()]
    assert httpx.post(f"{service_url}/v1/collections/speech/documents", json={"documents": documents},
                      timeout=120).status_code == 200
    for document in documents:
        body = {"query": {"audio": document["clip"]}, "k": 2}
        hits = httpx.post(f"{service_url}/v1/collections/speech/search", json=body, timeout=60).json()["results"]
        assert hits[0]["id"] == document["id"]
    captions = httpx.post(f"{service_url}/v1/collections/speech/search",  # captions are text: BM25 works
                          json={"query": "open the door", "mode": "sparse", "k": 1}, timeout=60).json()["results"]
    assert captions[0]["id"] == "open_the_door.wav"
    no_text = httpx.post(f"{service_url}/v1/collections/speech/search", json={"query": "door", "mode": "dense"},
                         timeout=60)
    assert_openai_error(no_text, 400, "embeds no text", "query")
    unfit = httpx.post(f"{service_url}/v1/collections", json={"name": "wrong", "model": "minilm", "modality": "audio"},
                       timeout=60)
    assert_openai_error(unfit, 400, "not audio", "modality")


def test_batch_jobs_embed_folders_of_images_and_audio_into_the_service(ray_session, service_url, service_config,
                                                                         tmp_path):
    folder = tmp_path / "digits"
    (folder / "train").mkdir(parents=True)
    for i, png in enumerate(DIGITS[:12]):
        (folder / "train" / f"{i:02d}.png").write_bytes(png)
    (folder / "train" / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps({"id": f"train/{i:02d}.png", "label": i % 10})
                                                     for i in range(12)) + "\n")
    spec = {"name": "digit_files", "model": "clip", "modality": "image", "fields": {"label": "int64"}, "bm25": False}
    job = JobConfig.model_validate({
        "input": {"path": str(folder), "format": "images", "sidecar": str(tmp_path / "labels.jsonl")},
        "model": service_config.model("clip").model_dump(),
        "compute": {"num_cpus": 0.5, "torch_threads": 2, "rows_per_part": 5},
        "codecs": ["float32", "binary"],
        "output": {"parquet": str(tmp_path / "out"), "collection": spec, "service_url": service_url},
    })
    summary = execute(plan(job))
    assert (summary.rows, summary.errors, summary.collection_count) == (12, 1, 12)
    errors = [json.loads(line) for line in open(summary.errors_file)]
    assert errors[0]["id"] == "train/broken.png" and "not an image" in errors[0]["reason"]
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out")
    assert set(table.column_names) == {"id", "text", "label", "float32", "binary"}  # no image bytes
    body = {"query": {"image": images(4)[3]}, "k": 1}
    found = httpx.post(f"{service_url}/v1/collections/digit_files/search", json=body, timeout=60).json()
    assert found["results"], found
    assert found["results"][0]["id"] == "train/03.png" and found["results"][0]["fields"]["label"] == 3

    voices = tmp_path / "voices"
    voices.mkdir()
    for name, data in CLIPS.items():
        (voices / name).write_bytes(data)
    audio_job = JobConfig.model_validate({
        "input": {"path": str(voices), "format": "audio"},
        "model": service_config.model("whisper").model_dump(),
        "compute": {"num_cpus": 0.5, "torch_threads": 2},
        "output": {"parquet": str(tmp_path / "voices-out")},
    })
    assert execute(plan(audio_job)).rows == len(CLIPS)
    vectors = pq.read_table(tmp_path / "voices-out").to_pydict()
    served = embed(service_url, model="whisper", modality="audio", input=[clips()[i] for i in vectors["id"]]).json()
    assert cosines(vectors["float32"], [item["embedding"] for item in served["data"]]).min() >= 0.9999

