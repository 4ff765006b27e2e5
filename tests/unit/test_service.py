"""The serving replica's logic without Ray or HTTP: model states, limits, wire formats."""

import asyncio
import base64
import json

import numpy as np
import pytest
from sentence_transformers.util.quantization import quantize_embeddings

from rayprism.deployments.service import EmbeddingService
from rayprism.platform.api.requests import EmbeddingRequest
from rayprism.platform.config import ModelConfig, ServeConfig, ServerConfig
from rayprism.platform.errors import InvalidInputError, NotFoundError, NotReadyError, PayloadTooLargeError


def started(config: ServeConfig):
    service = EmbeddingService(config)
    assert service.wait_loaded(120)
    yield service
    service.close()


@pytest.fixture(scope="module")
def service(tiny_model_path):
    yield from started(ServeConfig(server=ServerConfig(max_inputs_per_request=4),
                                   models=[ModelConfig(name="tiny", source=tiny_model_path)]))


def run(service, **body):
    return asyncio.run(service.create_embeddings(EmbeddingRequest(**body)))


def test_health_is_503_material_until_loaded_then_ready(tiny_model_path):
    service = EmbeddingService(ServeConfig(models=[ModelConfig(name="tiny", source=tiny_model_path)]), replica="r1")
    ready, body = service.health()  # loading takes far longer than constructing
    assert not ready and body == {"status": "loading", "models": {"tiny": "loading"}, "replica": "r1"}
    with pytest.raises(NotReadyError, match="still loading"):
        run(service, input="x")
    assert service.wait_loaded(120)
    assert service.health() == (True, {"status": "ok", "models": {"tiny": "ready"}, "replica": "r1"})
    service.check_health()  # Serve's hook passes once every model loaded
    service.close()


def test_a_model_that_cannot_load_is_reported(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    service = EmbeddingService(ServeConfig(models=[ModelConfig(name="broken", source=str(tmp_path))]))
    assert service.wait_loaded(60)
    ready, body = service.health()
    assert not ready and body["status"] == "error" and body["models"] == {"broken": "failed"}
    assert body["errors"]["broken"]
    with pytest.raises(NotReadyError, match="failed to load"):
        run(service, input="x")
    with pytest.raises(RuntimeError, match="models failed to load: {'broken': "):
        service.check_health()  # Serve replaces the replica


def test_float_and_base64_carry_the_same_vectors(service):
    as_float = run(service, input=["a", "b"])
    as_base64 = run(service, input=["a", "b"], encoding_format="base64")
    for plain, packed in zip(as_float["data"], as_base64["data"]):
        decoded = np.frombuffer(base64.b64decode(packed["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, plain["embedding"])
    assert [item["index"] for item in as_float["data"]] == [0, 1]
    assert as_float["usage"]["prompt_tokens"] == as_float["usage"]["total_tokens"] == 6


def test_dimensions_truncate_and_renormalise(service):
    full = np.array(run(service, input="hello")["data"][0]["embedding"])
    short = np.array(run(service, input="hello", dimensions=4)["data"][0]["embedding"])
    assert short.shape == (4,)
    np.testing.assert_allclose(np.linalg.norm(short), 1.0, rtol=1e-6)
    np.testing.assert_allclose(short, full[:4] / np.linalg.norm(full[:4]), rtol=1e-5)
    with pytest.raises(InvalidInputError, match="dimensions 17 exceeds the model's 16"):
        run(service, input="hello", dimensions=17)


def test_a_long_text_is_cut_and_counted_as_embedded_or_refused_without_truncation(service, tiny_model_path):
    """``usage`` counts the tokens embedded: a long text's first 64 (the tiny model's limit), counted here by
    the model's own tokenizer; ``truncate: false`` refuses that text and embeds a short one as the default does."""
    from sentence_transformers import SentenceTransformer

    tokenizer = SentenceTransformer(tiny_model_path, device="cpu").tokenizer
    long = "word " * 100
    short = len(tokenizer("short")["input_ids"])
    assert run(service, input=["short", long])["usage"] == {"prompt_tokens": short + 64, "total_tokens": short + 64}
    with pytest.raises(InvalidInputError, match=rf"input\[1\] is {len(tokenizer(long)['input_ids'])} tokens; "
                                                "this model reads at most 64") as caught:
        run(service, input=["short", long], truncate=False)
    assert caught.value.param == "input[1]"
    kept, cut = run(service, input=["short"], truncate=False), run(service, input=["short"])
    assert kept["usage"] == cut["usage"]
    np.testing.assert_array_equal(kept["data"][0]["embedding"], cut["data"][0]["embedding"])


def test_model_lookup_and_limits(service):
    assert run(service, model="tiny", input="x")["model"] == "tiny"
    with pytest.raises(NotFoundError, match="'other' does not exist"):
        run(service, model="other", input="x")
    with pytest.raises(PayloadTooLargeError, match="too many inputs: 5"):
        run(service, input=["x"] * 5)


def test_metrics_labels_cannot_be_invented_by_callers(service):
    assert service.metrics_label(None) == "tiny"
    assert service.metrics_label("tiny") == "tiny"
    assert service.metrics_label("anything-else") == "unknown"


def test_a_full_queue_refuses_before_any_tokenising(tiny_model_path):
    """Overload is answered before the work: a 429 must not cost the tokenizer (nor reveal input errors)."""
    from rayprism.platform.config import BatchingConfig
    from rayprism.platform.errors import OverloadedError

    batching = BatchingConfig(max_queued_inputs=2, batch_wait_s=5.0)
    service = EmbeddingService(ServeConfig(models=[ModelConfig(name="tiny", source=tiny_model_path, batching=batching)]))
    assert service.wait_loaded(120)
    runner = service.runner("tiny")
    prepared = []
    real_prepare = runner.encoder.prepare
    runner.encoder.prepare = lambda *args, **kwargs: prepared.append(args) or real_prepare(*args, **kwargs)

    async def scenario():
        waiting = asyncio.ensure_future(runner.embed(["queued", "for five seconds"]))
        await asyncio.sleep(0.1)
        with pytest.raises(OverloadedError):
            await runner.embed(["", "an empty input would be a 400 if it were tokenised"])
        waiting.cancel()

    asyncio.run(scenario())
    assert len(prepared) == 1  # only the admitted request was tokenised
    service.close()


def test_metrics_of_several_replicas_merge_into_one_valid_exposition():
    """A serving replica and a model group's replica: each family once, every replica's samples."""
    from prometheus_client.parser import text_string_to_metric_families

    from rayprism.deployments.metrics import ServiceMetrics, merged_exposition

    ingress, group = ServiceMetrics("ingress-1"), ServiceMetrics("group-1")
    ingress.requests("tiny", "embeddings", "200").inc(3)
    group.observe_batch("speech", 4, 100, 0.5)
    group.queue_depth("speech").set(2)
    merged = merged_exposition([ingress.exposition(), group.exposition()]).decode()
    families = {family.name: family for family in text_string_to_metric_families(merged)}
    assert merged.count("# TYPE rayprism_replica_info gauge") == 1
    replicas = {sample.labels["replica"] for sample in families["rayprism_replica_info"].samples}
    assert replicas == {"ingress-1", "group-1"}
    assert any(s.value == 3 for s in families["rayprism_requests"].samples if s.labels.get("model") == "tiny")
    assert [s.value for s in families["rayprism_queue_depth"].samples if s.labels["model"] == "speech"] == [2]
    assert any(s.name == "rayprism_batch_size_count" and s.value == 1 for s in families["rayprism_batch_size"].samples)


def test_token_vector_requests_are_admitted_by_their_own_queue(tiny_model_path):
    """Token vectors batch apart from vectors: a full token queue refuses more (429) before tokenising
    them, even while the vector queue is empty."""
    from rayprism.deployments.metrics import ServiceMetrics
    from rayprism.deployments.runner import ModelRunner
    from rayprism.platform.config import BatchingConfig
    from rayprism.platform.errors import OverloadedError

    config = ModelConfig(name="tiny", source=tiny_model_path,
                         batching=BatchingConfig(batch_wait_s=2.0, max_queued_inputs=4))
    runner = ModelRunner(config, ServiceMetrics("test"))
    runner.load()
    prepared_calls = []
    real_prepare = runner.encoder.prepare
    runner.encoder.prepare = lambda *args, **kwargs: (  # counts, then runs
        prepared_calls.append(args) or real_prepare(*args, **kwargs))

    async def scenario() -> None:
        waiting = asyncio.create_task(runner.embed_tokens(["a", "b", "c", "d"]))  # the idle wait holds them
        await asyncio.sleep(0.2)
        assert runner.queued_inputs == 4
        with pytest.raises(OverloadedError, match="too many inputs queued"):
            await runner.embed_tokens(["e"])
        assert len(prepared_calls) == 1  # the refused request cost no tokenising
        assert len((await waiting).tokens) == 4

    asyncio.run(scenario())
    runner.close()


# output_dtype and token-id input: codes equal sentence-transformers' quantize_embeddings of the float answer

COMPACT_TEXTS = ["a red fox", "the window manager", "kernel modules", "a quiet lake at dawn"]


@pytest.fixture(scope="module")
def ranges(tiny_model_path, tmp_path_factory):
    """int8 ranges of the model's own vectors of other texts (numpy min/max), as a batch job calibrates them."""
    from sentence_transformers import SentenceTransformer

    sample = SentenceTransformer(tiny_model_path, device="cpu").encode([f"calibration text {i}" for i in range(32)])
    ranges = np.vstack((sample.min(axis=0), sample.max(axis=0)))
    path = tmp_path_factory.mktemp("ranges") / "_int8_ranges.json"
    path.write_text(json.dumps({"min": ranges[0].tolist(), "max": ranges[1].tolist()}))
    return path, ranges


@pytest.fixture(scope="module")
def compact(tiny_model_path, ranges):
    """A model with int8 ranges and one without."""
    yield from started(ServeConfig(models=[ModelConfig(name="ranged", source=tiny_model_path, int8_ranges=ranges[0]),
                                           ModelConfig(name="plain", source=tiny_model_path)]))


def embeddings(answer) -> np.ndarray:
    return np.array([item["embedding"] for item in answer["data"]])


@pytest.mark.parametrize("dimensions", [None, 8])
@pytest.mark.parametrize("dtype, width", [("binary", np.int8), ("ubinary", np.uint8)])
def test_packed_bits_equal_sentence_transformers(compact, dtype, width, dimensions):
    floats = embeddings(run(compact, model="plain", input=COMPACT_TEXTS, dimensions=dimensions))
    codes = run(compact, model="plain", input=COMPACT_TEXTS, dimensions=dimensions, output_dtype=dtype)["data"]
    assert [item["index"] for item in codes] == [0, 1, 2, 3]
    got = np.array([item["embedding"] for item in codes])
    assert got.dtype == width and got.shape == (4, (dimensions or 16) // 8)
    np.testing.assert_array_equal(got, quantize_embeddings(floats, precision=dtype))


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_int8_codes_use_the_models_ranges(compact, ranges, dtype):
    floats = embeddings(run(compact, model="ranged", input=COMPACT_TEXTS))
    got = embeddings(run(compact, model="ranged", input=COMPACT_TEXTS, output_dtype=dtype))
    np.testing.assert_array_equal(got, quantize_embeddings(floats, precision=dtype, ranges=ranges[1]))
    # ranges from this request alone (quantize_embeddings' default) would give other codes
    assert not np.array_equal(got, quantize_embeddings(floats, precision=dtype))


def test_what_cannot_be_answered_is_a_400_naming_the_field(compact):
    with pytest.raises(InvalidInputError, match="has no int8 ranges") as refused:
        run(compact, model="plain", input=COMPACT_TEXTS, output_dtype="uint8")
    assert refused.value.param == "output_dtype"
    with pytest.raises(InvalidInputError, match="calibrated for 16 dimensions, not 8") as refused:
        run(compact, model="ranged", input=COMPACT_TEXTS, output_dtype="int8", dimensions=8)
    assert refused.value.param == "dimensions"
    with pytest.raises(InvalidInputError, match='send "encoding_format": "float"') as refused:
        run(compact, model="plain", input=COMPACT_TEXTS, output_dtype="binary", encoding_format="base64")
    assert refused.value.param == "encoding_format"


def test_token_ids_are_read_only_when_declared_the_models_own(compact, tiny_model_path):
    from sentence_transformers import SentenceTransformer

    ids = SentenceTransformer(tiny_model_path, device="cpu").tokenizer(COMPACT_TEXTS)["input_ids"]
    with pytest.raises(InvalidInputError, match="check_embedding_ctx_length=False") as refused:
        run(compact, model="plain", input=ids)
    assert refused.value.param == "input"
    np.testing.assert_allclose(embeddings(run(compact, model="plain", input=ids, tokenizer="model")),
                               embeddings(run(compact, model="plain", input=COMPACT_TEXTS)), atol=1e-6)


def test_a_ranges_file_that_is_not_ranges_fails_the_config(tmp_path):
    bad = tmp_path / "ranges.json"
    bad.write_text(json.dumps({"min": [0.0, 1.0], "max": [1.0, 0.5]}))
    with pytest.raises(ValueError, match="each minimum at most its maximum"):
        ModelConfig(int8_ranges=bad)
    bad.write_text(json.dumps({"low": [0.0]}))
    with pytest.raises(ValueError, match="is not"):
        ModelConfig(int8_ranges=bad)
