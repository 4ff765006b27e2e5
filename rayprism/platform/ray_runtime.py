"""Starting or joining Ray: the one place every path (serve, embed, train) does it."""

from __future__ import annotations

import os


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: ``address`` if given, else ``$RAY_ADDRESS``; None means start a local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def start_ray(address: str | None = None, *, log_to_driver: bool = True) -> None:
    """Join the cluster :func:`cluster_address` names, or start a local Ray without a dashboard."""
    import ray

    joining = cluster_address(address)
    if joining:
        ray.init(address=joining, log_to_driver=log_to_driver)
    else:
        ray.init(address="local", include_dashboard=False, log_to_driver=log_to_driver)
