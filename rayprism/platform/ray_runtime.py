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


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: ``address`` if given, else ``$RAY_ADDRESS``; None means start a local Ray."""
    return address or os.environ.get(RAY_ADDRESS_VARIABLE) or None


def quiet_ray_logs() -> None:
    """Ray's own loggers in this process report errors only (they configure themselves on import, so
    this runs before and again after ``ray.init``)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def start_ray(address: str | None = None, *, verbose: bool = False) -> None:
    """Join the cluster :func:`cluster_address` names, or start a local Ray without a dashboard."""
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
