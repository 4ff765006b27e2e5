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
