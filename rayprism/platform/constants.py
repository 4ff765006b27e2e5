"""Names every layer shares: the Serve application and its deployments, Ray actor names, the
re-embedding API's defaults, and the environment variables rayprism reads or sets.

One module (as Ray Serve's ``_private/constants.py``) so a reader finds each name in one place
and a rename is one edit. Ray Serve's own ingress settings (``RAY_SERVE_*``) are planned in
:mod:`rayprism.deployments.ingress`, the one module that sets them.
"""

from __future__ import annotations

# ---------------------------------------------------------------- Ray Serve

APP_NAME = "rayprism"  # the Serve application `rayprism serve` runs and deletes when it stops
DEPLOYMENT_NAME = "rayprism"  # the serving deployment: HTTP routes and every model no group takes
STORE_DEPLOYMENT_NAME = "store"  # the deployment that owns the Milvus client and the in-memory mirrors
STORE_COORDINATOR_DEPLOYMENT_NAME = "store-coordinator"  # with several store replicas: what they must agree on


def group_deployment_name(group: str) -> str:
    """The deployment of a model group (``deployments:`` in serve.yaml)."""
    return f"group-{group}"


# ---------------------------------------------------------------- Ray actors

NAMESPACE = "rayprism"  # the Ray namespace re-embedding workers are created in and found by name


def batch_driver_name(app_name: str, batch_id: str) -> str:
    """The detached actor that runs the job of batch ``batch_id`` (the OpenAI Batch API) of application ``app_name``."""
    return f"batch:{app_name}:{batch_id}"


def reembed_worker_name(app_name: str, job_id: str) -> str:
    """The detached actor that runs re-embedding job ``job_id`` of application ``app_name``."""
    return f"reembed:{app_name}:{job_id}"


# ---------------------------------------------------------------- re-embedding defaults

REEMBED_BATCH_SIZE = 64  # documents read, embedded and written per step (and change-log ids replayed per step)
REEMBED_MAX_BATCH_SIZE = 2048  # the largest batch_size a re-embedding or rollback accepts
GATE_SAMPLE = 100  # stored documents the agreement gate uses as queries when no query set is given

# ---------------------------------------------------------------- environment variables

API_KEY_VARIABLE = "RAYPRISM_API_KEY"  # read by the client and the CLI: the key they send
API_KEYS_VARIABLE = "RAYPRISM_API_KEYS"  # read by the service: keys it accepts beside server.api_keys (comma-separated)
URL_VARIABLE = "RAYPRISM_URL"  # read by the CLI and the SDK: the service they talk to
XDG_STATE_HOME_VARIABLE = "XDG_STATE_HOME"  # read by `rayprism ingest` of files: its records live under it (default ~/.local/state)
HAPROXY_BINARY_VARIABLE = "RAYPRISM_HAPROXY_BINARY"  # set by `rayprism serve`: the HAProxy the shim becomes
HAPROXY_HOME_VARIABLE = "RAYPRISM_HAPROXY_HOME"  # set by `rayprism serve`: the service folder HAProxy's shim writes in
RAY_ADDRESS_VARIABLE = "RAY_ADDRESS"  # read when no --address is given: the cluster to join
RAY_AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"  # read by `rayprism submit`: "disabled" sends no token
RAY_AUTH_TOKEN_VARIABLE = "RAY_AUTH_TOKEN"  # read by `rayprism submit`: the cluster's token
RAY_AUTH_TOKEN_PATH_VARIABLE = "RAY_AUTH_TOKEN_PATH"  # read by `rayprism submit`: a file holding the token
TOKENIZERS_PARALLELISM_VARIABLE = "TOKENIZERS_PARALLELISM"  # set to "false" unless chosen: see quiet_tokenizers

ARROW_STREAM = "application/vnd.apache.arrow.stream"
"""The media type of a snapshot page and of a restore's rows (``/v1/snapshots``, ``/v1/collections/{name}/rows``):
one Arrow IPC stream."""
