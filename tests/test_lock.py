"""The locks agree with pyproject.toml, and `make venv` and the image install from them.

requirements-test.lock (runtime dependencies plus the `test` extra: what `make venv` installs)
and requirements.lock (runtime only: what the image installs) are written by `make lock`. Here:
every dependency pyproject.toml names is locked at one version its specifier allows, both locks
pin the same version of what they share, every pin carries sha256 hashes, and the installs use
them with --require-hashes. The checks are functions returning a list of problems; the mutation
tests feed them broken copies to show that each one can fail.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from consumer.usage._otel_fastpath import VERIFIED_SDK_VERSIONS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
MAKEFILE = ROOT / "Makefile"
DOCKERFILE = ROOT / "Dockerfile"

_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]


def _logical_lines(text: str) -> list[str]:
    """Requirement lines with continuations joined; comments and blank lines dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            lines.append(full)
    if pending.strip():
        lines.append(pending.strip())
    return lines


def parse_lock(text: str) -> tuple[dict[str, Pin], list[str]]:
    """{canonical name: Pin} and the problems found reading it (unpinned or hashless lines)."""
    pins: dict[str, Pin] = {}
    problems: list[str] = []
    for line in _logical_lines(text):
        requirement, *options = line.split()
        match = _PIN.fullmatch(requirement.split(";", 1)[0])
        if not match:
            problems.append(f"{requirement}: not pinned with ==")
            continue
        name = canonicalize_name(match["name"])
        hashes = frozenset(o for o in options if _HASH.fullmatch(o))
        others = [o for o in options if o not in hashes]
        if not hashes:
            problems.append(f"{name}: no --hash=sha256:")
        if others:
            problems.append(f"{name}: unexpected {others}")
        if name in pins:
            problems.append(f"{name}: locked twice")
        pins[name] = Pin(match["version"], hashes)
    return pins, problems


def header_problems(text: str, where: str) -> list[str]:
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    if not any(re.fullmatch(r"#\s+make lock", line) for line in header):
        return [f"{where}: the header does not name `make lock` as the command that made it"]
    return []


def _requirements(pyproject: dict[str, Any]) -> tuple[list[Requirement], list[Requirement]]:
    project = pyproject["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    test = [Requirement(r) for r in project["optional-dependencies"]["test"]]
    return runtime, test


def _unmet(requirements: list[Requirement], pins: dict[str, Pin], where: str) -> list[str]:
    problems = []
    for requirement in requirements:
        if requirement.marker and not requirement.marker.evaluate({"extra": "test"}):
            continue  # not for this platform/Python: the lock need not have it
        name = canonicalize_name(requirement.name)
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{where}: {requirement} is not locked")
        elif not requirement.specifier.contains(Version(pin.version), prereleases=True):
            problems.append(f"{where}: {name}=={pin.version} does not satisfy {requirement}")
    return problems


def lock_problems(pyproject: dict[str, Any], lock_text: str, test_lock_text: str) -> list[str]:
    runtime, test = _requirements(pyproject)
    lock, problems = parse_lock(lock_text)
    test_lock, test_problems = parse_lock(test_lock_text)
    problems = [f"{LOCK.name}: {p}" for p in problems]
    problems += [f"{TEST_LOCK.name}: {p}" for p in test_problems]
    problems += header_problems(lock_text, LOCK.name)
    problems += header_problems(test_lock_text, TEST_LOCK.name)
    problems += _unmet(runtime, lock, LOCK.name)
    problems += _unmet(runtime + test, test_lock, TEST_LOCK.name)
    # The image runs what the tests ran: one version (and one set of files) for both.
    for name, pin in sorted(lock.items()):
        other = test_lock.get(name)
        if other is None:
            problems.append(f"{name} is in {LOCK.name} but not in {TEST_LOCK.name}")
        elif other != pin:
            problems.append(f"{name}: {LOCK.name} and {TEST_LOCK.name} pin it differently")
    # The SDK fast path verified its private surfaces on these releases only.
    sdk = test_lock.get("opentelemetry-sdk")
    if sdk is not None and sdk.version not in VERIFIED_SDK_VERSIONS:
        problems.append(
            f"opentelemetry-sdk=={sdk.version} is not in VERIFIED_SDK_VERSIONS "
            f"{sorted(VERIFIED_SDK_VERSIONS)}"
        )
    return problems


def _pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())


def test_the_locks_agree_with_pyproject() -> None:
    assert lock_problems(_pyproject(), LOCK.read_text(), TEST_LOCK.read_text()) == []


def test_the_runtime_lock_holds_no_test_tooling() -> None:
    pins, _ = parse_lock(LOCK.read_text())
    runtime, test = _requirements(_pyproject())
    extra_only = {canonicalize_name(r.name) for r in test} - {
        canonicalize_name(r.name) for r in runtime
    }
    assert not extra_only & set(pins), sorted(extra_only & set(pins))


def _with_pin(text: str, name: str, version: str) -> str:
    new, count = re.subn(rf"(?m)^{re.escape(name)}==\S+", f"{name}=={version}", text)
    assert count == 1, name
    return new


def _without_package(text: str, name: str) -> str:
    """The lock less one package's entry (its pin line, hash lines and annotations)."""
    new, count = re.subn(rf"(?ms)^{re.escape(name)}==.*?(?=^[a-z0-9])", "", text)
    assert count == 1, name
    return new


def _without_hashes(text: str, name: str) -> str:
    new, count = re.subn(
        rf"(?ms)^({re.escape(name)}==\S+) \\\n(?:    --hash=sha256:\w+(?: \\)?\n)+", r"\1\n", text
    )
    assert count == 1, name
    return new


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        # A runtime dependency missing from either lock.
        (lambda lk, tl: (_without_package(lk, "bcrypt"), tl), "bcrypt>=4.1 is not locked"),
        (lambda lk, tl: (lk, _without_package(tl, "bcrypt")), "bcrypt>=4.1 is not locked"),
        # A test extra's dependency missing.
        (lambda lk, tl: (lk, _without_package(tl, "hypothesis")), "hypothesis>=6.100 is not"),
        # A pin outside pyproject's range.
        (
            lambda lk, tl: (lk, _with_pin(tl, "prometheus-client", "0.27.0")),
            "prometheus-client==0.27.0 does not satisfy",
        ),
        # The two locks disagree.
        (
            lambda lk, tl: (_with_pin(lk, "pyyaml", "6.0.1"), tl),
            "pyyaml: requirements.lock and requirements-test.lock pin it differently",
        ),
        # The SDK on a release the fast path was not verified on (still inside pyproject's range).
        (
            lambda lk, tl: (
                _with_pin(lk, "opentelemetry-sdk", "1.45.1"),
                _with_pin(tl, "opentelemetry-sdk", "1.45.1"),
            ),
            "opentelemetry-sdk==1.45.1 is not in VERIFIED_SDK_VERSIONS",
        ),
        # A pin without hashes, and a range instead of a pin.
        (lambda lk, tl: (_without_hashes(lk, "msgspec"), tl), "msgspec: no --hash=sha256:"),
        (
            lambda lk, tl: (lk, tl.replace("pytest==", "pytest>=", 1)),
            "not pinned with ==",
        ),
        # A lock written by hand, or by a command other than `make lock`.
        (
            lambda lk, tl: (lk.replace("#    make lock", "#    uv pip compile pyproject.toml"), tl),
            "requirements.lock: the header does not name `make lock`",
        ),
    ],
)
def test_lock_checks_can_fail(mutate: Any, expected: str) -> None:
    lock, test_lock = mutate(LOCK.read_text(), TEST_LOCK.read_text())
    problems = lock_problems(_pyproject(), lock, test_lock)
    assert any(expected in problem for problem in problems), problems


def test_a_new_dependency_fails_until_locked() -> None:
    pyproject = _pyproject()
    pyproject["project"]["dependencies"].append("not-yet-locked>=1")
    problems = lock_problems(pyproject, LOCK.read_text(), TEST_LOCK.read_text())
    assert "requirements.lock: not-yet-locked>=1 is not locked" in problems


# --------------------------------------------------------------------------------------------
# The installs


def _make_variables(text: str) -> dict[str, str]:
    return dict(re.findall(r"(?m)^([A-Z_]+) :?= (.*)$", text))


def _make_rule(text: str, target: str) -> tuple[list[str], list[str]]:
    """(prerequisites, recipe lines) of a rule, variables expanded."""
    variables = _make_variables(text)

    def expand(value: str) -> str:
        return re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables.get(m[1], m[0]), value)

    match = re.search(rf"(?m)^{re.escape(target)}:([^\n]*)\n((?:\t[^\n]*\n)*)", text)
    assert match, f"no rule for {target}"
    prerequisites = expand(match[1].split("##", 1)[0]).split()
    recipe = [expand(line.strip()) for line in match[2].splitlines()]
    return prerequisites, recipe


def makefile_problems(text: str) -> list[str]:
    problems = []
    prerequisites, recipe = _make_rule(text, "$(STAMP)")
    if TEST_LOCK.name not in prerequisites:
        problems.append(f"the venv stamp does not depend on {TEST_LOCK.name}")
    installs = [line for line in recipe if " pip install " in line and "--upgrade pip" not in line]
    locked = [line for line in installs if f"--require-hashes -r {TEST_LOCK.name}" in line]
    if not locked:
        problems.append(f"make venv does not install {TEST_LOCK.name} with --require-hashes")
    for line in installs:
        if line not in locked and "--no-deps" not in line:
            problems.append(f"make venv resolves dependencies outside the lock: {line}")
    if not any("--no-deps -e ." in line for line in installs):
        problems.append("make venv does not install the project with --no-deps -e .")
    lock_rule = re.search(r"(?m)^lock:.*## .+$", text)
    if not lock_rule:
        problems.append("no `lock:` rule with a `## ` help text (make help lists those)")
    else:
        _, lock_recipe = _make_rule(text, "lock")
        joined = " ".join(lock_recipe)
        for needed in ("--generate-hashes", f"-o {LOCK.name}", f"-o {TEST_LOCK.name}"):
            if needed not in joined:
                problems.append(f"make lock does not run with {needed}")
    return problems


def dockerfile_problems(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    problems = []
    if not re.search(rf"(?m)^COPY {re.escape(LOCK.name)} ", joined):
        problems.append(f"the image does not copy {LOCK.name}")
    if TEST_LOCK.name in joined:
        problems.append(f"the image uses {TEST_LOCK.name}: the test extra has no place in it")
    installs = re.findall(r"pip (?:--python \S+ )?install [^&\n]*", joined)
    if not any(f"--require-hashes -r {LOCK.name}" in line for line in installs):
        problems.append(f"the image does not install {LOCK.name} with --require-hashes")
    for line in installs:
        if "--require-hashes" not in line and "--no-deps" not in line:
            problems.append(f"the image resolves dependencies outside the lock: {line}")
    return problems


def test_make_venv_and_make_lock_use_the_locks() -> None:
    assert makefile_problems(MAKEFILE.read_text()) == []


def test_the_image_installs_the_runtime_lock() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("--require-hashes -r $(TEST_LOCK)", "-r $(TEST_LOCK)", "with --require-hashes"),
        ("--no-deps -e .", "-e '.[test]'", "resolves dependencies outside the lock"),
        ("$(STAMP): pyproject.toml $(TEST_LOCK)", "$(STAMP): pyproject.toml", "does not depend"),
        ("lock: ## ", "lock: # ", "no `lock:` rule"),
        ("--generate-hashes", "", "does not run with --generate-hashes"),
    ],
)
def test_makefile_checks_can_fail(old: str, new: str, expected: str) -> None:
    text = MAKEFILE.read_text()
    assert old in text
    problems = makefile_problems(text.replace(old, new))
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("--require-hashes -r requirements.lock", "-r requirements.lock", "--require-hashes"),
        ("install --no-deps /tmp/wheels", "install /tmp/wheels", "outside the lock"),
        ("COPY requirements.lock ./", "COPY requirements-test.lock ./", "does not copy"),
    ],
)
def test_dockerfile_checks_can_fail(old: str, new: str, expected: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    problems = dockerfile_problems(text.replace(old, new))
    assert any(expected in problem for problem in problems), problems
