"""The Prometheus rules and example config under deploy/prometheus, checked by promtool.

promtool comes with Debian's `prometheus` package (`make prometheus` installs it). The unit tests
in deploy/prometheus/tests feed every recording rule and every alert synthetic series and expect
exact values, labels and rendered annotations; the tests here run them and check that they
cover every rule, both firing and not firing.

The rule files come in two pairs: recording.yml and alerts.yml (the worker's own metrics, for
both metrics profiles, and the `llm` profile's), genai-recording.yml and genai-alerts.yml (the
`genai` profile's). Every check here covers every rule file, and each has a unit test file named
after it (genai-alerts.yml: tests/genai_alerts_test.yml).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from consumer.exposition.self_metrics import WorkerMetrics
from consumer.exposition.text import TextRenderer
from consumer.usage.options import UsageOptions
from consumer.usage.profiles import build_trackers
from consumer.usage.provider import build_meter_provider

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "prometheus"
RULES_DIR = DEPLOY / "rules"
# Every rule file, in the order prometheus.yml loads them. The compose stack and the end-to-end
# test load rules/*.yml, so a file in that directory must be listed (and tested) here.
RULE_FILES = [
    RULES_DIR / name
    for name in ("recording.yml", "alerts.yml", "genai-recording.yml", "genai-alerts.yml")
]
UNIT_TESTS = sorted((DEPLOY / "tests").glob("*.yml"))
OPERATIONS_DOC = REPO / "docs" / "operations.md"
SEVERITIES = {"critical", "warning", "info"}


def promtool(*args: str, cwd: Path = DEPLOY) -> str:
    """Runs promtool; fails the test with its output unless it succeeds."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: `make prometheus` installs it (Debian's prometheus)")
    proc = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} exited {proc.returncode}:\n{output}"
    return output


def groups(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["groups"]


def rules(kind: str, paths: Sequence[Path] = tuple(RULE_FILES)) -> list[dict[str, Any]]:
    """Every rule of one kind ("record" or "alert") across the rule files (or those given)."""
    out = []
    for path in paths:
        for group in groups(path):
            out.extend(rule for rule in group["rules"] if kind in rule)
    return out


def unit_test_file(rule_file: Path) -> Path:
    """A rule file's promtool unit tests: rules/genai-alerts.yml, tests/genai_alerts_test.yml."""
    return DEPLOY / "tests" / f"{rule_file.stem.replace('-', '_')}_test.yml"


def unit_tests(rule_file: Path) -> list[dict[str, Any]]:
    """The tests of the unit test file named after a rule file."""
    return yaml.safe_load(unit_test_file(rule_file).read_text())["tests"]


def test_every_rule_file_in_the_rules_directory_is_listed() -> None:
    assert sorted(RULES_DIR.glob("*.yml")) == sorted(RULE_FILES)
    names = [group["name"] for path in RULE_FILES for group in groups(path)]
    assert len(names) == len(set(names)), names


def test_rule_files_pass_promtool_check() -> None:
    output = promtool("check", "rules", *map(str, RULE_FILES))
    for path in RULE_FILES:
        count = sum(len(group["rules"]) for group in groups(path))
        assert count, path
        assert f"Checking {path}\n  SUCCESS: {count} rules found" in output, output


def test_example_config_passes_promtool_check() -> None:
    # check config also loads and checks the rule files it names
    output = promtool("check", "config", "prometheus.yml")
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in output, output
    for path in RULE_FILES:
        count = sum(len(group["rules"]) for group in groups(path))
        assert f"Checking {path.relative_to(DEPLOY)}\n  SUCCESS: {count} rules found" in output
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert [(DEPLOY / f).resolve() for f in config["rule_files"]] == RULE_FILES
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "llm-usage-consumer"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9464"]}]


def test_every_rule_file_has_a_unit_test_file_that_loads_it() -> None:
    assert sorted(map(unit_test_file, RULE_FILES)) == UNIT_TESTS
    for rule_file in RULE_FILES:
        test_file = unit_test_file(rule_file)
        loaded = [
            (test_file.parent / f).resolve()
            for f in yaml.safe_load(test_file.read_text())["rule_files"]
        ]
        assert set(loaded) <= set(RULE_FILES), (test_file, loaded)
        assert rule_file in loaded, (test_file, loaded)


def test_promtool_unit_tests_pass() -> None:
    output = promtool("test", "rules", *(str(p.relative_to(DEPLOY)) for p in UNIT_TESTS))
    for path in UNIT_TESTS:
        assert f"Unit Testing:  {path.relative_to(DEPLOY)}\n  SUCCESS" in output, output
    assert output.count("SUCCESS") == len(UNIT_TESTS), output


def test_every_recording_rule_has_an_exact_unit_test() -> None:
    names = [rule["record"] for rule in rules("record")]
    assert len(names) == len(set(names)), names
    for rule_file in RULE_FILES:
        # tested with expected samples by the unit test file named after the rule's file
        tested = {
            case["expr"]
            for test in unit_tests(rule_file)
            for case in test.get("promql_expr_test", [])
            if case["exp_samples"]
        }
        missing = {rule["record"] for rule in rules("record", [rule_file])} - tested
        assert sorted(missing) == [], f"recording rules of {rule_file.name} without exact test"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    for rule_file in RULE_FILES:
        # by the unit test file named after the alert's file
        firing: set[str] = set()
        silent: set[str] = set()
        for test in unit_tests(rule_file):
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
        names = {rule["alert"] for rule in rules("alert", [rule_file])}
        assert sorted(names - firing) == [], f"alerts of {rule_file.name} never tested firing"
        assert sorted(names - silent) == [], f"alerts of {rule_file.name} never tested not firing"


def test_recording_rules_follow_the_naming_convention_and_sum_over_workers() -> None:
    for rule in rules("record"):
        name, expr = rule["record"], rule["expr"]
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", name), name
        # per-worker rates would double-count partitions moving between workers
        assert "instance" not in expr, (name, expr)
        if "rate(" in expr:
            assert "sum by (" in expr, (name, expr)


def test_alerts_carry_severity_summary_description_and_runbook() -> None:
    anchors = []
    for rule in rules("alert"):
        name = rule["alert"]
        assert re.fullmatch(r"UsageConsumer[A-Za-z]+", name), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == f"docs/operations.md#{name.lower()}", name
        assert 'job="llm-usage-consumer"' in rule["expr"], name
        anchors.append(name.lower())
    assert len(anchors) == len(set(anchors)), anchors


def _markdown_anchors(text: str) -> set[str]:
    """GitHub's heading anchors (lower-cased, punctuation dropped, spaces to dashes)."""
    anchors = set()
    for line in text.splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            anchors.add(slug)
    anchors.update(re.findall(r'<a\s+(?:name|id)="([^"]+)"', text))
    return anchors


def test_every_runbook_anchor_exists_in_the_operations_doc() -> None:
    assert OPERATIONS_DOC.exists(), f"{OPERATIONS_DOC} holds the alerts' runbooks"
    present = _markdown_anchors(OPERATIONS_DOC.read_text())
    wanted = {rule["annotations"]["runbook_url"].split("#", 1)[1] for rule in rules("alert")}
    assert sorted(wanted - present) == [], "runbook anchors missing from docs/operations.md"


def test_promtool_check_metrics_flags_only_the_gateways_millisecond_histogram() -> None:
    """`promtool check metrics` on a worker's exposition (both profiles, every instrument, the
    worker's own metrics) finds exactly one thing: the `llm` profile's duration histogram is in
    milliseconds, the gateway's own name (kept so its dashboards work). The README's lint line
    filters exactly that finding."""
    registry = CollectorRegistry()
    provider = build_meter_provider(registry, 100)
    WorkerMetrics.create(registry)
    request = UsageOptions(
        provider="openai",
        model="m",
        status="error",
        error_code="x",
        input_tokens=3,
        output_tokens=2,
        cache_input_tokens=1,
        system_tokens=1,
        latency_ms=120,
    )
    for tracker in build_trackers("both", provider.get_meter("t"), 100):
        tracker.record_batch([request])
    text = TextRenderer().render(registry)
    provider.shutdown()
    binary = shutil.which("promtool")
    assert binary, "promtool not found: `make prometheus` installs it"
    found = subprocess.run(
        [binary, "check", "metrics"], input=text, capture_output=True, check=False
    )
    findings = (found.stdout + found.stderr).decode().strip().splitlines()
    assert findings == [
        'llm_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"'
    ]
    assert found.returncode == 3  # lint problems only
