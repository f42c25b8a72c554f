"""Static checks of docker-compose.yml and Dockerfile (no Docker engine is needed or used)."""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

#: `surveil` subcommands (DESIGN §3.7 plus the store writer).
SUBCOMMANDS = {
    "up",
    "broker",
    "worker",
    "store",
    "dashboard",
    "simulate",
    "replay",
    "backtest",
    "evaluate",
    "bench",
    "keys",
}
APP_SERVICES = ("keys", "worker", "store", "dashboard")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # resolves the `<<: *anchor` merges
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (compose allows a mapping or ``KEY=VALUE`` list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``"NAME://host:port,..."`` -> ``{NAME: (host, port)}`` (empty host = all interfaces)."""
    out: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Named-volume mounts of a service: ``{volume name: container path}``."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type", "volume") == "volume":
                mounts[volume["source"]] = volume["target"]
            continue
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/", "~")):
            mounts[source] = target
    return mounts


def published_container_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:
            ports.add(int(str(port).split(":")[-1].split("/")[0]))
    return ports


def test_services_present(services: dict[str, Any]) -> None:
    assert {"kafka", *APP_SERVICES} <= set(services)
    assert str(services["kafka"]["image"]).startswith("apache/kafka:")


def test_kafka_is_a_consistent_kraft_single_node(services: dict[str, Any]) -> None:
    env = env_of(services["kafka"])
    node_id = env["KAFKA_NODE_ID"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}

    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in bound
    assert set(bound) <= set(protocols), "every listener needs a security protocol"
    assert set(advertised) <= set(bound) - {controller}, "advertise bound, non-controller listeners"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    for name, (_host, port) in advertised.items():
        assert bound[name][1] == port, f"{name} advertises a port it does not bind"

    # The quorum is this node, reached on the controller listener, by a name that resolves.
    hostname = services["kafka"].get("hostname", "kafka")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@{hostname}:{bound[controller][1]}"

    # CLUSTER_ID must be a Kafka Uuid: base64url of exactly 16 bytes.
    cluster_id = env["CLUSTER_ID"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
    try:
        raw = base64.urlsafe_b64decode(cluster_id + "==")
    except binascii.Error:  # pragma: no cover - the regex already excludes it
        pytest.fail(f"CLUSTER_ID {cluster_id!r} is not base64url")
    assert len(raw) == 16

    # Single node: internal topics cannot have more than one replica.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    # Data survives container re-creation.
    assert env["KAFKA_LOG_DIRS"] in named_volumes(services["kafka"]).values()
    assert "test" in services["kafka"]["healthcheck"]


def test_every_surveil_brokers_points_at_kafkas_advertised_listener(
    services: dict[str, Any],
) -> None:
    kafka = services["kafka"]
    advertised = set(listeners(env_of(kafka)["KAFKA_ADVERTISED_LISTENERS"]).values())
    # Containers reach the broker by its service name (or hostname) on the compose network.
    in_network = {"kafka", kafka.get("hostname", "kafka")}
    seen = 0
    for name, service in services.items():
        brokers = env_of(service).get("SURVEIL_BROKERS")
        if brokers is None:
            continue
        seen += 1
        for address in brokers.split(","):
            host, _, port = address.strip().rpartition(":")
            assert (host, int(port)) in advertised, f"{name}: {address} is not advertised"
            assert host in in_network, f"{name}: {host} does not resolve inside the network"
    assert seen >= len(APP_SERVICES)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_wiring(services: dict[str, Any], name: str) -> None:
    service = services[name]
    build = service["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (context / dockerfile).resolve() == DOCKERFILE

    command = service["command"]
    argv = command.split() if isinstance(command, str) else list(command)
    assert argv[0] == "surveil"
    assert argv[1] in SUBCOMMANDS
    assert argv[1] == name  # each service runs the subcommand it is named after

    env = env_of(service)
    assert env["SURVEIL_BROKERS"]
    assert "SURVEIL_TOPIC_PREFIX" in env
    depends = service["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"


def test_store_and_dashboard_share_the_data_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    mounts = {name: named_volumes(services[name]) for name in ("store", "dashboard")}
    data_dirs = {name: env_of(services[name])["SURVEIL_DATA_DIR"] for name in mounts}
    assert data_dirs == {"store": "/data", "dashboard": "/data"}
    shared = [
        volume
        for volume, target in mounts["store"].items()
        if target == "/data" and mounts["dashboard"].get(volume) == "/data"
    ]
    assert len(shared) == 1, mounts
    assert shared[0] in (compose.get("volumes") or {}), "the shared volume must be declared"


def test_worker_replicas_share_the_signing_and_checkpoint_keys(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    """``--scale worker=N``: a worker restores the checkpoints of one that died only with the same
    HMAC key (``$SURVEIL_DATA_DIR/checkpoint.key``), and halts are signed only when the detector
    key exists (``$SURVEIL_DATA_DIR/keys``, made by the one-shot ``keys`` service first)."""
    worker, keys = services["worker"], services["keys"]
    assert env_of(worker)["SURVEIL_DATA_DIR"] == env_of(keys)["SURVEIL_DATA_DIR"] == "/data"
    assert "SURVEIL_CHECKPOINT_KEY" not in env_of(worker)  # else it must be shared here
    shared = set(named_volumes(worker).items()) & set(named_volumes(keys).items())
    assert ("surveil-data", "/data") in shared
    assert worker["depends_on"]["keys"]["condition"] == "service_completed_successfully"
    assert keys.get("restart") == "no"
    assert "surveil-data" in (compose.get("volumes") or {})


def test_dashboard_port_is_published(services: dict[str, Any]) -> None:
    service = services["dashboard"]
    argv = list(service["command"])
    port = int(argv[argv.index("--port") + 1])
    assert port == 8501
    assert port in published_container_ports(service)


def test_dockerfile_builds_and_installs_the_package() -> None:
    assert DOCKERFILE.is_file()
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    instructions = " ".join(lines)
    assert re.search(r"\bpip install (\S+ )*\.(\s|$)", instructions), "pip install . is missing"

    # Everything the build needs is copied: pyproject.toml and every package it declares.
    copied: set[str] = set()
    for line in lines:
        if line.startswith("COPY "):
            copied.update(Path(src).parts[0] for src in line.split()[1:-1])
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        pattern.rstrip("*").rstrip(".")
        for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert "pyproject.toml" in copied or "." in copied
    assert packages <= copied or "." in copied, f"not copied: {packages - copied}"
