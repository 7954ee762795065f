"""The deployment files are read by the tools that consume them and carry what operations rely on.

docker-compose.yml goes through the real Compose CLI (`docker compose` or `docker-compose`), which
validates it against the Compose schema and resolves anchors and `${...}`; the checks then read
the configuration the tool printed, not the file's text. deploy/k8s/*.yaml is parsed with PyYAML.
Neither needs the local stack or a Docker engine.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = "deploy/Dockerfile"
K8S_DIR = ROOT / "deploy" / "k8s"
WORKERS = ("notifier", "relay", "projector", "web")
INSTALL_HINT = (
    "neither `docker compose` nor `docker-compose` is installed; the compose file must be checked "
    "with the real tool. Run `make tools` (it does `apt-get install -y --no-install-recommends "
    "docker-compose` on Debian), or install the Docker Compose plugin."
)

Doc = dict[str, Any]


def compose_command() -> list[str]:
    """The Compose CLI: the v2 plugin when the docker client has it, else the standalone v1."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is None:
        pytest.fail(INSTALL_HINT)
    return [legacy]


def run_compose_config(tmp_path: Path, *, key: str | None) -> subprocess.CompletedProcess[str]:
    """`compose config` of docker-compose.yml, isolated from the caller's CT_* variables and .env"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CT_", "COMPOSE_"))}
    if key is not None:
        env["CT_ENCRYPTION_KEY"] = key
    # An empty env file stands in for a developer's .env, whose key would hide a missing one.
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    command = [*compose_command(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120
    )


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Doc:
    """The configuration that the Compose CLI resolved from docker-compose.yml."""
    key = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")
    result = run_compose_config(tmp_path_factory.mktemp("compose"), key=key)
    assert result.returncode == 0, f"compose config rejected docker-compose.yml:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def published_targets(service: Doc) -> set[int]:
    """Container ports a service publishes, from v1's short syntax or v2's long syntax."""
    targets: set[int] = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            targets.add(int(port["target"]))
        else:
            targets.add(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return targets


def test_compose_file_is_accepted_by_the_compose_cli(compose: Doc) -> None:
    """The real tool parses and validates the file, and every service of the stack is there."""
    assert set(compose["services"]) == {
        "kafka",
        "mongo",
        "mailpit",
        "topics",
        "registry",
        *WORKERS,
    }


def test_the_schema_registry_is_optional_and_the_workers_take_its_url(compose: Doc) -> None:
    """Only `--profile registry` starts it; unset, CT_SCHEMA_REGISTRY_URL is empty (= unset)."""
    registry = compose["services"]["registry"]
    assert registry["profiles"] == ["registry"]
    assert published_targets(registry) == {8080}
    for name in WORKERS:
        environment = compose["services"][name]["environment"]
        assert environment["CT_SCHEMA_REGISTRY_URL"] == ""
        assert environment["CT_SCHEMA_FRAMING"] == "single-object"


def test_compose_refuses_to_run_without_an_encryption_key(tmp_path: Path) -> None:
    """Without CT_ENCRYPTION_KEY, compose stops with the hint instead of starting broken workers."""
    result = run_compose_config(tmp_path, key=None)
    assert result.returncode != 0
    assert "set CT_ENCRYPTION_KEY" in result.stderr


@pytest.mark.parametrize("name", ["topics", *WORKERS])
def test_worker_services_are_built_from_deploy_dockerfile(compose: Doc, name: str) -> None:
    """The workers and the one-shot topics job run the image that deploy/Dockerfile builds."""
    build = compose["services"][name]["build"]
    assert build["dockerfile"] == DOCKERFILE
    assert Path(build["context"]).resolve() == ROOT
    assert (ROOT / DOCKERFILE).is_file()


@pytest.mark.parametrize("name", WORKERS)
def test_workers_are_health_checked_and_wait_for_topics(compose: Doc, name: str) -> None:
    """Each worker runs its own process, probes /healthz, and starts after topics were created."""
    service = compose["services"][name]
    assert service["command"] == ["run", name]
    assert any("/healthz" in str(part) for part in service["healthcheck"]["test"])
    depends_on = service["depends_on"]
    assert depends_on["topics"]["condition"] == "service_completed_successfully"
    assert depends_on["mongo"]["condition"] == "service_healthy"
    assert service["environment"]["CT_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_topics_job_waits_for_a_healthy_kafka_that_creates_no_topics_itself(compose: Doc) -> None:
    """Topics come only from `ct topics create`; the broker's auto-creation is off."""
    services = compose["services"]
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    assert str(kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]


def test_relay_publishes_its_smtp_port(compose: Doc) -> None:
    assert 2525 in published_targets(compose["services"]["relay"])


def load_k8s() -> dict[str, list[Doc]]:
    """Every document of every deploy/k8s/*.yaml, by file name."""
    files = sorted(K8S_DIR.glob("*.yaml"))
    assert files, f"no manifests in {K8S_DIR}"
    loaded: dict[str, list[Doc]] = {}
    for path in files:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs, f"{path.name} is empty"
        for doc in docs:
            assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
            assert {"apiVersion", "kind"} <= doc.keys(), f"{path.name}: no apiVersion or kind"
        loaded[path.name] = docs
    return loaded


def only(docs: list[Doc], kind: str) -> Doc:
    matches = [doc for doc in docs if doc["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def test_k8s_manifests_parse_and_kustomization_lists_them() -> None:
    """All manifests parse; kustomize applies each one except the example Secret and the
    optional schema registry."""
    manifests = load_k8s()
    kustomization = only(manifests["kustomization.yaml"], "Kustomization")
    resources = set(kustomization["resources"])
    assert all((K8S_DIR / name).is_file() for name in resources)
    optional = {"kustomization.yaml", "secret.example.yaml", "registry.yaml"}
    assert resources == set(manifests) - optional


@pytest.mark.parametrize("name", WORKERS)
def test_worker_deployment_has_probes_resources_and_a_locked_down_pod(name: str) -> None:
    """Liveness on /healthz, readiness on /readyz, requests and limits, non-root read-only pod,
    and a termination grace longer than the worker's own shutdown grace."""
    manifests = load_k8s()
    deployment = only(manifests[f"{name}.yaml"], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert container["args"] == ["run", name]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][bound].keys()

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    config = only(manifests["configmap.yaml"], "ConfigMap")["data"]
    assert pod["terminationGracePeriodSeconds"] > float(config["CT_SHUTDOWN_GRACE_S"])
    sources = [ref.get("configMapRef") or ref.get("secretRef") for ref in container["envFrom"]]
    assert {source["name"] for source in sources} == {"ct-config", "ct-secrets"}


@pytest.mark.parametrize("name", ["notifier", "relay"])
def test_signing_workers_get_the_dkim_key_as_a_file(compose: Doc, name: str) -> None:
    """Compose mounts it as a secret, Kubernetes from the Secret ct-dkim; the path matches."""
    service = compose["services"][name]
    assert [s["source"] for s in service["secrets"]] == ["dkim_key"]
    assert service["environment"]["CT_DKIM_PRIVATE_KEY_FILE"] == "/run/secrets/dkim_key"
    assert service["environment"]["CT_DKIM_SELECTOR"]
    pod = only(load_k8s()[f"{name}.yaml"], "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    path = {e["name"]: e["value"] for e in container["env"]}["CT_DKIM_PRIVATE_KEY_FILE"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "dkim")
    assert path.startswith(mount["mountPath"] + "/") and mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "dkim")
    assert volume["secret"]["secretName"] == "ct-dkim"


def test_relay_service_maps_smtp_port_25_to_the_pod_port_2525() -> None:
    manifests = load_k8s()
    service = only(manifests["relay.yaml"], "Service")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 25
    pod = only(manifests["relay.yaml"], "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert by_name[port["targetPort"]] == 2525


SECRET_SETTINGS = {
    "CT_ENCRYPTION_KEY",
    "CT_MONGO_URI",
    "CT_KAFKA_SASL_USERNAME",
    "CT_KAFKA_SASL_PASSWORD",
    "CT_SMTP_USERNAME",
    "CT_SMTP_PASSWORD",
}


def test_secrets_stay_out_of_the_configmap() -> None:
    """Keys, passwords and the MongoDB URI come from the Secret, never from the ConfigMap."""
    manifests = load_k8s()
    config = only(manifests["configmap.yaml"], "ConfigMap")["data"]
    assert not set(config) & SECRET_SETTINGS
    assert not [name for name in config if "KEY" in name or "PASSWORD" in name]
    secret = only(manifests["secret.example.yaml"], "Secret")
    assert set(secret["stringData"]) == SECRET_SETTINGS


def test_the_configmap_and_secret_make_settings_that_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """SASL_SSL with its mechanism and credentials, STARTTLS with AUTH: a combination the
    workers accept (the example key aside, which is a placeholder on purpose)."""
    from worker.core.config import load_settings

    manifests = load_k8s()
    env = only(manifests["configmap.yaml"], "ConfigMap")["data"]
    env |= only(manifests["secret.example.yaml"], "Secret")["stringData"]
    for name in [n for n in os.environ if n.startswith("CT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name != "CT_ENCRYPTION_KEY":
            monkeypatch.setenv(name, str(value))
    settings = load_settings()
    assert settings.kafka_security_protocol == "SASL_SSL" and settings.smtp_tls == "starttls"
    assert "REPLACE-WITH-THE-PASSWORD" not in settings.mongo_uri_shown
