"""Start (or join) Ray, deploy the service, report where it listens, stop cleanly at any moment.

Where the service listens and which Ray settings put it there: :mod:`rayprism.deployments.ingress`.
How a stop reaches every step, and what a killed service leaves for the next start to clean up:
:mod:`rayprism.deployments.lifecycle`.
"""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rayprism.deployments.ingress import check_ports, ingress_env, ingress_path, lingers, port_plan
from rayprism.deployments.lifecycle import ServiceHome, StopRequested, StopSignal, run_with_deadline
from rayprism.platform.api.keys import Need
from rayprism.platform.config import ServeConfig, is_lite_uri
from rayprism.platform.constants import API_KEYS_VARIABLE, APP_NAME
from rayprism.platform.errors import ConfigError, NotReadyError, last_line
from rayprism.platform.models.source import resolve_source
from rayprism.platform.store.lite_disk import check_lite_store

if TYPE_CHECKING:  # batch_routes imports Ray, which must not be imported before keep_local_ray_private
    from rayprism.deployments.batch_routes import BatchLauncher

READY_TIMEOUT_S = 900
GRACEFUL_STOP_S = 10.0
"""How long replicas get to finish what is in flight when the service stops; then Ray ends them."""
REMEMBER_EVERY_S = 2.0
"""How often the processes of a local service are recorded for the next start (see ServiceHome)."""
TIME_WAIT_S = 65.0
"""Linux holds a port's closed connections in TIME_WAIT for 60 s."""


def apply_env(settings: dict[str, str]) -> None:
    """Set each variable unless the user already chose a value."""
    for name, value in settings.items():
        os.environ.setdefault(name, value)


def own_key(config: ServeConfig) -> str | None:
    """The key the service's own calls (readiness, seeding) send: the first ``admin`` key whose text the service
    knows (a bare string, ``key`` or ``key_env``; a ``sha256`` entry it cannot send), or None."""
    keys = config.server.resolved_api_keys()
    return next((key.secret for key in keys if key.secret is not None and key.allows(Need("admin"))), None)


def preflight(config: ServeConfig, echo: Callable[[str], None]) -> None:
    """Fail before Ray starts on what can be checked here (model sources, API keys, Milvus Lite paths that hold
    something else); warn about an open door."""
    for model in config.models:
        resolve_source(model.source)
    for uri in {config.store.uri, *(collection.uri for collection in config.collections if collection.uri)}:
        if is_lite_uri(uri):
            check_lite_store(Path(uri).expanduser())
    keys = config.server.resolved_api_keys()
    needs_own_key = config.seed is not None or config.server.api_key_routes == "all"
    if keys and needs_own_key and own_key(config) is None:
        raise ConfigError(f"server.api_keys: none of {[key.name for key in keys]} is an admin key the service can send "
                          f"(a plain key, or an entry with scope admin and key or key_env; not sha256), and its own "
                          f"calls need one (readiness with api_key_routes: all, filling the seed collection): add "
                          f"one, e.g. in ${API_KEYS_VARIABLE}")
    if not keys and not is_loopback(config.server.host):
        echo(f"warning: serving on {config.server.host} without an API key: anyone who can reach port "
             f"{config.server.port} can embed, read, write and drop collections. Set server.api_keys in the "
             f"config or ${API_KEYS_VARIABLE}.")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: only the machine's resolver knows
        return False


def absolute_store_paths(config: ServeConfig) -> ServeConfig:
    """Milvus Lite paths (and the audit file's) made absolute here: the store and the replicas run in Ray workers
    with another working directory."""

    def absolute(uri: str | None) -> str | None:
        return str(Path(uri).expanduser().resolve()) if uri and is_lite_uri(uri) else uri

    return config.model_copy(
        update={
            "store": config.store.model_copy(update={"uri": absolute(config.store.uri)}),
            "server": config.server.model_copy(update={"audit_log": absolute(config.server.audit_log)}),
            "collections": [c.model_copy(update={"uri": absolute(c.uri)}) for c in config.collections],
            "batches": config.batches.model_copy(update={"dir": str(Path(config.batches.dir).expanduser().resolve())}),
        }
    )


def service_url(config: ServeConfig) -> str:
    return f"http://{config.server.host}:{config.server.port}"


def deploy(config: ServeConfig, *, direct_ingress: bool, stop: StopSignal | None = None,
           batch_jobs: BatchLauncher | None = None) -> None:
    """Run the application on the Ray this process is connected to; returns once its replicas run.
    With direct ingress and one replica, Ray's own proxy moves aside to a free port."""
    from ray import serve

    from rayprism.deployments.app import build_application

    proxy_port = 0 if direct_ingress and ingress_path(config) == "direct" else config.server.port
    serve.start(http_options={"host": config.server.host, "port": proxy_port})
    check_serve_port(proxy_port)
    application = build_application(absolute_store_paths(config), batch_jobs)
    serve.run_many([serve.RunTarget(application, name=APP_NAME, route_prefix="/")],
                   wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
    wait_for_application(APP_NAME, stop or StopSignal())


def check_serve_port(port: int) -> None:
    """Serve that already runs on a cluster keeps its proxies' port (``serve.start`` only warns): a service
    asking for another would never answer there, and ``rayprism serve`` would wait for it forever."""
    from ray.serve.context import _get_global_client

    running = _get_global_client().http_config.port
    if port and running != port:
        raise ConfigError(f"Ray Serve already runs on this cluster with its HTTP proxies on port {running}, not "
                          f"{port}: set server.port (or --port) to {running}")


def wait_for_application(name: str, stop: StopSignal) -> None:
    """Until Serve reports the application running; its failure as one sentence, not Ray's traceback."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    while True:
        application = serve.status().applications.get(name)
        if application is not None and application.status == ApplicationStatus.RUNNING:
            return
        if application is not None and application.status == ApplicationStatus.DEPLOY_FAILED:
            raise NotReadyError(f"the service could not start: {deploy_failure(application)}")
        stop.sleep(0.5)


def deploy_failure(application) -> str:
    """What failed, from Serve's status: each failed deployment with the last line of its error."""
    from ray.serve._private.common import DeploymentStatus

    failed = [(name, status.message) for name, status in application.deployments.items()
              if status.status in (DeploymentStatus.DEPLOY_FAILED, DeploymentStatus.UNHEALTHY)]
    reasons = [f"deployment {name}: {last_line(message)}" for name, message in failed] or [last_line(application.message)]
    return "; ".join(reasons) + " (Ray's logs: /tmp/ray/session_latest/logs/serve)"


def wait_until_ready(url: str, *, replicas: int = 1, timeout_s: float = READY_TIMEOUT_S, api_key: str | None = None,
                     stop: StopSignal | None = None) -> None:
    """Poll ``/health`` until ``replicas`` distinct serving replicas have answered ready (several share
    one port: each poll, on a new connection, reaches one); a model that fails to load ends the wait."""
    import httpx

    stop = stop or StopSignal()
    deadline = time.monotonic() + timeout_s
    ready: set[str] = set()
    last: dict = {}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/health", timeout=5, headers=headers)
            last = response.json()
            if response.status_code == 200:
                ready.add(last.get("replica", ""))
                if len(ready) >= replicas:
                    return
                stop.sleep(0.1)  # the next poll, on a new connection, may reach another replica
                continue
            if last.get("status") == "error":
                problems = "; ".join(f"{subject}: {problem}" for subject, problem in last.get("errors", {}).items())
                raise NotReadyError(f"the service could not start: {problems}")
        except httpx.TransportError:
            last = {"status": "starting"}
        stop.sleep(0.5)
    raise NotReadyError(f"service at {url} not ready after {timeout_s:.0f}s (last health: {last}; "
                        f"{len(ready)} of {replicas} replicas ready)")


def seed_collection(url: str, config: ServeConfig, echo: Callable[[str], None], api_key: str | None = None) -> None:
    """Fill the seed collection from its files, the first time only (it is empty): one document per file, as
    ``rayprism ingest`` reads them (ids relative to the working directory), cut by the collection's chunking."""
    from rayprism.client import Client, SourceDocument
    from rayprism.platform.text.files import FileProblem, find_files, read_file

    seed = config.seed
    with Client(url, api_key=api_key) as client:
        schema = client.collection(seed.collection)
        if schema["count"] > 0:
            return
        read = [item if isinstance(item, FileProblem) else read_file(item)
                for item in find_files(seed.files, root=Path.cwd())]
        documents = [SourceDocument(item.path, item.record(schema["text_field"], schema["fields"]))
                     for item in read if not isinstance(item, FileProblem)]
        for problem in (item for item in read if isinstance(item, FileProblem)):
            echo(f"seed: {problem.path}: {problem.reason}")
        echo(f"first start: filling {seed.collection!r} with {len(documents)} files ...")
        summary = client.ingest(seed.collection, documents)
    echo(f"filled {seed.collection!r}: {summary.upserted} documents in {summary.seconds:.1f} s")


def prepare_local_ports(config: ServeConfig, home: ServiceHome, echo: Callable[[str], None], stop: StopSignal) -> None:
    """Before a local Ray starts: refuse a port another program holds, point Ray at this service's
    ports and files, and wait out what a stop a moment ago left on the one port a lone replica binds."""
    plan = port_plan(config)
    check_ports(plan)
    path = ingress_path(config)
    if path == "haproxy":
        home.write_haproxy_launcher()
    apply_env(ingress_env(config, home.path))
    if path == "direct" and lingers(plan.host, plan.api):
        echo(f"port {plan.api} still holds the connections of a service that just stopped (TIME_WAIT); "
             f"waiting up to {TIME_WAIT_S:.0f} s for it ...")
        deadline = time.monotonic() + TIME_WAIT_S
        while lingers(plan.host, plan.api) and time.monotonic() < deadline:
            stop.sleep(1)


def start(config: ServeConfig, *, joining: bool, echo: Callable[[str], None], stop: StopSignal,
          batch_jobs: BatchLauncher | None = None) -> None:
    """Deploy, wait for every replica, fill the seed collection: each step stoppable."""
    deploy(config, direct_ingress=not joining, stop=stop, batch_jobs=batch_jobs)
    url = service_url(config)
    echo(f"loading models {sorted(m.name for m in config.models)} ...")
    api_key = own_key(config)
    wait_until_ready(url, replicas=config.deployment.replicas.min, api_key=api_key, stop=stop)
    if config.seed is not None:
        stop.run(lambda: seed_collection(url, config, echo, api_key))


def delete_application(serve) -> None:
    """Serve's delete of this application, when Serve runs: a Ctrl-C between Ray's start and Serve's has
    nothing to delete (``serve.delete`` would fail looking for Serve's controller)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:  # no controller: Serve never started
        return
    serve.delete(APP_NAME)


def stop_service(*, joining: bool, echo: Callable[[str], None]) -> None:
    """Replicas get :data:`GRACEFUL_STOP_S` to finish what is in flight; then a local Ray ends with this
    process (Serve's HAProxy with it: see :mod:`rayprism.deployments.haproxy_exec`). A cluster's other
    applications run on."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    echo("stopping ...")
    if not run_with_deadline(lambda: delete_application(serve), GRACEFUL_STOP_S):
        echo(f"replicas still busy after {GRACEFUL_STOP_S:.0f} s: ending them")
    if not joining:
        ray.shutdown()


def serve_forever(config: ServeConfig, *, address: str | None = None, echo: Callable[[str], None] = print,
                  verbose: bool = False, batch_jobs: BatchLauncher | None = None) -> None:
    """``batch_jobs``: what starts the OpenAI Batch API's jobs (the CLI gives :class:`rayprism.jobs.batches.BatchJobs`;
    without one, batches are refused)."""
    from rayprism.platform.ray_runtime import cluster_address, keep_local_ray_private, start_ray

    keep_local_ray_private(address)  # before Ray is imported: it reads the setting then
    import ray.serve  # noqa: F401  (Serve sets its loggers up when imported: before start_ray quiets them)

    stop = StopSignal()
    stop.install()  # first: a Ctrl-C at any later moment must stop what has started so far
    preflight(config, echo)
    joining = cluster_address(address) is not None
    home = None if joining else ServiceHome(config.server.port)
    if home is not None:
        home.claim(echo)
    try:
        if home is not None:
            prepare_local_ports(config, home, echo, stop)
        start_ray(address, verbose=verbose)
        stop.install()  # again: ray.init replaced the SIGTERM handler
        if home is not None:
            stop.every(REMEMBER_EVERY_S, home.remember_started)
        stop.check()
        start(config, joining=joining, echo=echo, stop=stop, batch_jobs=batch_jobs)
        url = service_url(config)
        echo(f"rayprism is serving at {url}  (POST {url}/v1/embeddings, GET {url}/health)")
        if config.seed is not None:
            echo(f'try: rayprism search {config.seed.collection} "how do I run the tests" --url {url}')
        echo("press Ctrl-C to stop")
        stop.wait()
    except StopRequested:
        pass
    finally:
        stop_service(joining=joining, echo=echo)
        if home is not None:
            home.release()
    echo("stopped")
