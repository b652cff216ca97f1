"""`usage-consumer broker` and `usage-consumer demo` from a built wheel, in a fresh venv.

The broker's Maven project (consumer/devtools/kafka/) is package data: an installed wheel must
find it in its own site-packages, not in a checkout. So the wheel is built from a copy of this
checkout (an in-tree build would leave build/ and egg-info behind in it, and setuptools copies
whatever stale files build/lib holds into the wheel), installed with its dependencies into a new
venv, and run from a working directory outside the checkout, with no PYTHONPATH. Once per module:
a cold pip cache makes it the slow part.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from consumer.devtools import broker
from tests.harness import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
MAVEN_PROJECT = ("consumer/devtools/kafka/pom.xml", "consumer/devtools/kafka/log4j2.properties")
# The source tree is what .gitignore does not ignore (and not the git dir).
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".local",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
)
# A first run downloads the jars with Maven (into ~/.cache/llm-usage-consumer), then formats.
_BROKER_START_TIMEOUT = 900.0
_BOOTSTRAP = re.compile(r"127\.0\.0\.1:\d+")


@dataclass(frozen=True)
class Installed:
    """The wheel, and the fresh venv it is installed in."""

    wheel: Path
    bin: Path
    site_packages: Path
    workdir: Path  # outside the checkout: nothing there to import `consumer` from
    env: dict[str, str] = field(repr=False)


def _run(
    cmd: list[str | Path], *, cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in cmd],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, cmd))} exited {done.returncode}\n--- stdout ---\n{done.stdout[-4000:]}"
        f"\n--- stderr ---\n{done.stderr[-4000:]}"
    )
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    assert not root.is_relative_to(REPO)
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    wheels = root / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, source],
        cwd=root,
        timeout=600,
    )
    [wheel] = wheels.glob("llm_usage_consumer-*.whl")

    workdir = root / "work"
    workdir.mkdir()
    # Nothing of the dev venv or the checkout may leak in.
    leaky = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in leaky}
    env["USAGE_CONSUMER_LOG_FORMAT"] = "text"  # readable failure output
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=workdir, timeout=300, env=env)
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", wheel], cwd=workdir, timeout=1200, env=env)
    purelib = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        cwd=workdir,
        timeout=60,
        env=env,
    ).stdout.strip()
    return Installed(
        wheel=wheel, bin=venv / "bin", site_packages=Path(purelib), workdir=workdir, env=env
    )


def test_wheel_ships_the_brokers_maven_project(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        for name in MAVEN_PROJECT:
            assert name in names
            # Byte for byte: the jar cache is keyed on the pom's hash.
            assert wheel.read(name) == (REPO / name).read_bytes()


def test_installed_package_reads_its_own_maven_project(installed: Installed) -> None:
    done = _run(
        [
            installed.bin / "python",
            "-c",
            "import consumer.devtools.broker as b; print(b._POM); print(b._LOG4J_CONFIG)",
        ],
        cwd=installed.workdir,
        timeout=60,
        env=installed.env,
    )
    paths = [Path(line) for line in done.stdout.splitlines()]
    assert len(paths) == 2, done.stdout
    for path in paths:
        assert path.is_relative_to(installed.site_packages), path
        assert not path.is_relative_to(REPO), path
        assert path.is_file(), path


@pytest.fixture
def broker_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose broker, if any was started, is stopped whatever the test did."""
    path = tmp_path / "kafka"
    try:
        yield path
    finally:
        broker.stop_broker(path, timeout=10.0)


def test_broker_start_and_stop_from_the_wheel(installed: Installed, broker_dir: Path) -> None:
    cli = installed.bin / "usage-consumer"
    started = _run(
        [cli, "broker", "start", "--data-dir", broker_dir],
        cwd=installed.workdir,
        timeout=_BROKER_START_TIMEOUT,
        env=installed.env,
    )
    bootstrap = started.stdout.splitlines()[-1]
    assert _BOOTSTRAP.fullmatch(bootstrap), started.stdout

    # A real broker, answering a client that is not the one which waited for it.
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert [f"{b.host}:{b.port}" for b in metadata.brokers.values()] == [bootstrap]
    # Started with the installed package's log4j2.properties.
    info = broker.broker_status(broker_dir)
    assert info is not None
    assert info.bootstrap == bootstrap
    cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().decode().split("\0")
    log_config = f"-Dlog4j2.configurationFile={installed.site_packages}/{MAVEN_PROJECT[1]}"
    assert log_config in cmdline

    stopped = _run(
        [cli, "broker", "stop", "--data-dir", broker_dir],
        cwd=installed.workdir,
        timeout=120,
        env=installed.env,
    )
    assert "broker stopped" in stopped.stdout
    assert broker.broker_status(broker_dir) is None


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)
    except OSError:
        return 0  # not listening yet


def test_demo_from_the_wheel(installed: Installed, tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    port = free_port()
    out_path, err_path = tmp_path / "demo.out", tmp_path / "demo.err"

    def output() -> str:
        out = out_path.read_text(errors="replace")[-4000:]
        err = err_path.read_text(errors="replace")[-4000:]
        return f"--- stdout ---\n{out}\n--- stderr ---\n{err}"

    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [
                str(installed.bin / "usage-consumer"),
                "demo",
                "--data-dir",
                str(data_dir),
                "--metrics-host",
                "127.0.0.1",
                "--metrics-port",
                str(port),
            ],
            cwd=installed.workdir,
            env=installed.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + _BROKER_START_TIMEOUT
            while not any(
                line.startswith("metrics ") for line in out_path.read_text().splitlines()
            ):
                assert proc.poll() is None, f"demo exited ({proc.returncode}):\n{output()}"
                assert time.monotonic() < deadline, f"no metrics line:\n{output()}"
                time.sleep(0.2)
            assert f"metrics  http://127.0.0.1:{port}/metrics" in out_path.read_text()

            deadline = time.monotonic() + 60
            while _healthz(port) != 200:
                assert proc.poll() is None, f"demo exited ({proc.returncode}):\n{output()}"
                assert time.monotonic() < deadline, f"/healthz never answered 200:\n{output()}"
                time.sleep(0.2)

            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"demo still running 60 s after SIGINT:\n{output()}")
            assert code == 0, output()
            assert "local broker stopped" in out_path.read_text().splitlines(), output()
            assert broker.broker_status(data_dir) is None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            broker.stop_broker(data_dir, timeout=10.0)
