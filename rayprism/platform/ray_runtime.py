"""Starting or joining Ray: the one place every path (serve, embed, train) does it.

By default a command shows only rayprism's own lines: Ray's INFO/WARNING chatter in this
process and the logs of its workers stay in Ray's log folder (``/tmp/ray/session_latest/logs``).
``verbose`` shows them as Ray normally does.
"""

from __future__ import annotations

import logging
import os

from rayprism.platform.constants import RAY_ADDRESS_VARIABLE

QUIET_LOGGERS = ("ray", "ray.serve", "ray.data", "ray.train", "ray.tune")

LOOPBACK_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Ray's own switch for a one-machine Ray (its default on macOS and Windows): the node's address is
127.0.0.1, so the GCS, raylet, workers and agents listen on loopback only. Without it they listen on
every interface, and anyone who reaches the machine reaches Ray (token authentication guards its
gRPC ports, not the agents' metrics page). Ray reads it when imported, in every process it starts."""


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: ``address`` if given, else ``$RAY_ADDRESS``; None means start a local Ray."""
    return address or os.environ.get(RAY_ADDRESS_VARIABLE) or None


def quiet_ray_logs() -> None:
    """Ray's own loggers in this process report errors only (they configure themselves on import, so
    this runs before and again after ``ray.init``)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def keep_local_ray_private(address: str | None) -> None:
    """Before Ray is first imported: a Ray this process will start listens on loopback only
    (:data:`LOOPBACK_RAY`; a value the user set wins). Joining a cluster changes nothing."""
    if cluster_address(address) is None:
        for name, value in LOOPBACK_RAY.items():
            os.environ.setdefault(name, value)


def start_ray(address: str | None = None, *, verbose: bool = False) -> None:
    """Join the cluster :func:`cluster_address` names, or start a local Ray without a dashboard, on
    loopback (see :func:`keep_local_ray_private`)."""
    keep_local_ray_private(address)
    import ray

    if not verbose:
        quiet_ray_logs()
    options = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
    joining = cluster_address(address)
    if joining:
        ray.init(address=joining, **options)
    else:
        ray.init(address="local", include_dashboard=False, **options)
    if not verbose:
        quiet_ray_logs()
