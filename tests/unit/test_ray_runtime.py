"""Which Ray a command starts or joins, and how a local one is kept to this machine."""

import os

import pytest

from rayprism.platform.ray_runtime import LOOPBACK_RAY, keep_local_ray_private

SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@pytest.fixture()
def clean_env(monkeypatch):
    for name in (SWITCH, "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_local_start_keeps_ray_on_loopback(clean_env):
    keep_local_ray_private(None)
    assert os.environ[SWITCH] == "0" == LOOPBACK_RAY[SWITCH]


@pytest.mark.parametrize("address, env_address", [("10.0.0.5:6379", None), (None, "10.0.0.5:6379")])
def test_joining_a_cluster_changes_nothing(clean_env, address, env_address):
    if env_address:
        clean_env.setenv("RAY_ADDRESS", env_address)
    keep_local_ray_private(address)
    assert SWITCH not in os.environ


def test_a_value_the_user_set_wins(clean_env):
    clean_env.setenv(SWITCH, "1")
    keep_local_ray_private(None)
    assert os.environ[SWITCH] == "1"


def test_nothing_serve_imports_before_keeping_ray_on_loopback_imports_ray():
    """Ray reads the loopback setting when it is first imported: what `rayprism serve` imports before it calls
    keep_local_ray_private (the CLI module, the launcher) must not import Ray already."""
    import subprocess
    import sys

    script = ("import sys; import rayprism.cli.serve, rayprism.deployments.launch, rayprism.platform.ray_runtime; "
              "print(sorted(name for name in sys.modules if name == 'ray' or name.startswith('ray.')))")
    imported = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"
