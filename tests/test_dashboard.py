"""The generated Grafana dashboard (deploy/grafana): fresh, complete, and its queries sound.

No broker and no Prometheus: the metric and label names the queries use are checked against the
exposition of a worker registry built in-process the way `consumer.cli.run_worker` builds it, and
every query is parsed as PromQL (promql-parser, a port of Prometheus' own parser).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import promql_parser as pp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumer.devtools.produce import synthetic_events
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.exposition.text import TextRenderer
from consumer.pipeline.ledger import LedgerCollector, OffsetLedger
from consumer.pipeline.validate import decode_fast
from consumer.usage.provider import METER_NAME, build_meter_provider
from consumer.usage.tracker import TokenTracker, UsageOptions
from tests.harness import COUNTERS

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
GENERATOR = GRAFANA / "dashboard.py"
CHECKED_IN = GRAFANA / "dashboards" / "llm-usage.json"
REGENERATE = "regenerate it with `make dashboard` (.venv/bin/python deploy/grafana/dashboard.py)"

VARIABLES = ("provider", "model", "scenario", "user_tier")
FILTER_LABELS = {f"llm_{v}": v for v in VARIABLES}
SENTINEL_RATE = timedelta(seconds=987)  # what $__rate_interval becomes for the AST checks
TARGET_LABELS = {"instance", "job"}  # added by Prometheus at scrape time, not by the worker
PER_WORKER_LABELS = {"instance", "job", "pod", "host", "hostname"}

# Every panel the issue asks for, by title.
REQUIRED_PANELS = {
    # tokens per second by provider and model (input, output, cache, system)
    "Input tokens/s by provider and model": "count:tokens/s",
    "Output tokens/s by provider and model": "count:tokens/s",
    "Cache input tokens/s by provider and model": "count:tokens/s",
    "System tokens/s by provider and model": "count:tokens/s",
    # requests and errors per second by status and error code
    "Requests/s by status": "reqps",
    "Errors/s by error code": "reqps",
    "Latency p50/p95/p99 by model": "ms",
    "Top models by tokens/s": "count:tokens/s",
    "Token mix per user tier": "count:tokens/s",
    "Consumer lag by partition": "short",
    "DLQ rate by reason": "mps",
    "Scrape-ack backlog: unscraped events per worker": "short",
    "Scrape-ack backlog: oldest unscraped event age": "s",
    "Cardinality overflow": "none",
    "Series per usage metric vs limit": "short",
    # what an SRE expects besides
    "Messages consumed and events recorded/s": "mps",
    "Commits/s": "ops",
    "Backpressure per worker": "bool_on_off",
    "Assigned partitions per worker": "short",
}
REQUIRED_ROWS = {
    "Overview",
    "Tokens",
    "Requests and latency",
    "Consumer: throughput, lag and commits",
    "Consumer: scrape-ack backlog and backpressure",
    "Cardinality",
}
# Which metric each required panel must read (a title alone proves little).
PANEL_METRICS = {
    "Input tokens/s by provider and model": {"llm_token_usage_input_total"},
    "Output tokens/s by provider and model": {"llm_token_usage_output_total"},
    "Cache input tokens/s by provider and model": {"llm_token_cache_input_total"},
    "System tokens/s by provider and model": {"llm_token_system_total"},
    "Requests/s by status": {"llm_request_count_total"},
    "Errors/s by error code": {"llm_request_errors_total"},
    "Latency p50/p95/p99 by model": {"llm_request_duration_milliseconds_bucket"},
    "Top models by tokens/s": {"llm_token_total"},
    "Token mix per user tier": {
        "llm_token_usage_input_total",
        "llm_token_usage_output_total",
        "llm_token_cache_input_total",
        "llm_token_system_total",
    },
    "Consumer lag by partition": {"usage_consumer_consumer_lag"},
    "DLQ rate by reason": {
        "usage_consumer_dead_letters_total",
        "usage_consumer_dead_letter_failures_total",
    },
    "Scrape-ack backlog: unscraped events per worker": {"usage_consumer_unscraped_events"},
    "Scrape-ack backlog: oldest unscraped event age": {
        "usage_consumer_oldest_unscraped_age_seconds"
    },
    "Cardinality overflow": {"usage_consumer_cardinality_overflow"},
    "Series per usage metric vs limit": {
        "usage_consumer_metric_series",
        "usage_consumer_cardinality_limit",
    },
    "Messages consumed and events recorded/s": {
        "usage_consumer_messages_consumed_total",
        "usage_consumer_events_recorded_total",
    },
    "Commits/s": {"usage_consumer_commits_total", "usage_consumer_commit_failures_total"},
    "Backpressure per worker": {"usage_consumer_backpressure"},
    "Assigned partitions per worker": {"usage_consumer_assigned_partitions"},
}


# --- helpers ---------------------------------------------------------------------------------


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_dashboard_generator", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def _substitute(expr: str, *, rate: str, value: str | None = None) -> str:
    """Grafana's interpolation: $__rate_interval, then each template variable ($name or
    ${name}); `value=None` puts a per-variable sentinel `__name__` in, so the AST shows which
    variable went where."""
    out = expr.replace("$__rate_interval", rate)
    for name in VARIABLES:
        sub = f"__{name}__" if value is None else value
        out = out.replace(f"${{{name}}}", sub).replace(f"${name}", sub)
    assert "$" not in out, f"unknown Grafana variable left in {expr!r}"
    return out


def _parse(expr: str) -> Any:
    return pp.parse(_substitute(expr, rate=f"{int(SENTINEL_RATE.total_seconds())}s"))


def _walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """Every node with its ancestors (outermost first); fails on a node kind it does not know."""
    yield node, path
    inner = (*path, node)
    if isinstance(node, pp.AggregateExpr):
        children = [node.expr] + ([node.param] if node.param is not None else [])
    elif isinstance(node, pp.Call):
        children = list(node.args)
    elif isinstance(node, pp.BinaryExpr):
        children = [node.lhs, node.rhs]
    elif isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        children = [node.expr]
    elif isinstance(node, pp.MatrixSelector):
        children = [node.vector_selector]
    elif isinstance(node, pp.VectorSelector | pp.NumberLiteral | pp.StringLiteral):
        children = []
    else:  # pragma: no cover - a new node kind: teach the walker
        raise AssertionError(f"unknown PromQL node {type(node).__name__}: {node}")
    for child in children:
        yield from _walk(child, inner)


def _selectors(node: Any) -> list[tuple[Any, tuple[Any, ...]]]:
    return [(n, path) for n, path in _walk(node) if isinstance(n, pp.VectorSelector)]


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows included, and the panels of collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in _panels(dashboard) for t in p.get("targets", [])]


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_]\w*)\)$")


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return _load_generator()


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(CHECKED_IN.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def exposition() -> dict[str, set[str]]:
    """{sample name: label names} of a worker registry wired as `run_worker` wires it, after
    realistic events and with every labelled worker metric given a child."""
    limit = 10_000
    registry = CollectorRegistry(auto_describe=True)
    provider = build_meter_provider(registry, limit)
    tracker = TokenTracker(provider.get_meter(METER_NAME), remembered_sets=limit)
    metrics = WorkerMetrics.create(registry)
    ledger = OffsetLedger("scrape")
    registry.register(LedgerCollector(ledger))

    decoded = [decode_fast(json.dumps(e).encode(), 65_536) for e in synthetic_events(300, 5)]
    tracker.record_batch(decoded)  # type: ignore[arg-type]
    tracker.record_batch(  # every token kind, an error code and a tier, whatever the mix gave
        [
            UsageOptions(
                provider="openai",
                model="gpt-4o",
                scenario="openai",
                input_tokens=10,
                output_tokens=5,
                cache_input_tokens=7,
                system_tokens=3,
                status="error",
                error_code="rate_limited",
                latency_ms=120,
                user_tier="pro",
            )
        ]
    )
    key = ("llm-usage", 0)
    ledger.assign([key])
    ledger.advance(key, 5, recorded=4, last_recorded=3)
    metrics.consumer_lag.labels("llm-usage", "0").set(3)
    metrics.rejected.labels("invalid_json").inc()
    metrics.dead_lettered.labels("invalid_json").inc()
    metrics.pauses.labels("backpressure").inc()
    metrics.partition_paused.labels("llm-usage", "0", "backpressure").set(1)
    metrics.revocations.labels("covered").inc()
    metrics.batch_size.observe(10)

    text = TextRenderer().render(registry).decode()
    provider.shutdown()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


# --- the JSON is the generator's -------------------------------------------------------------


def test_checked_in_json_is_what_the_generator_writes(generator: ModuleType) -> None:
    generated = generator.render()
    checked_in = CHECKED_IN.read_text(encoding="utf-8") if CHECKED_IN.exists() else ""
    sdk = importlib.metadata.version("grafana-foundation-sdk")
    assert generated == checked_in, (
        f"{CHECKED_IN.relative_to(ROOT)} is stale: {REGENERATE} (generated here with "
        f"grafana-foundation-sdk {sdk}; pyproject.toml pins the version the JSON was made with)"
    )


def test_generation_is_deterministic_and_check_mode_reports_staleness(
    generator: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = generator.render()
    assert generator.render() == first  # no timestamps, no random ids
    out = tmp_path / "llm-usage.json"
    assert generator.main(["--check", "--output", str(out)]) == 1  # missing
    assert generator.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == first
    assert generator.main(["--check", "--output", str(out)]) == 0
    out.write_text(first.replace('"LLM usage"', '"LLM usage (edited)"'), encoding="utf-8")
    capsys.readouterr()
    assert generator.main(["--check", "--output", str(out)]) == 1
    assert "make dashboard" in capsys.readouterr().err
    keys = list(json.loads(first))
    assert keys == sorted(keys)


def test_dashboard_identity_and_schema(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "llm-usage-consumer"
    assert dashboard["title"] == "LLM usage"
    assert isinstance(dashboard["schemaVersion"], int)
    assert 36 <= dashboard["schemaVersion"] <= 41  # Grafana 10.x to 11.6
    assert "id" not in dashboard  # Grafana assigns it
    assert "version" not in dashboard
    builtin = dashboard["annotations"]["list"]
    assert [a["builtIn"] for a in builtin] == [1]


# --- structure -------------------------------------------------------------------------------


def test_every_panel_the_issue_lists_exists_with_its_unit_and_metrics(
    dashboard: dict[str, Any],
) -> None:
    panels = {p["title"]: p for p in _panels(dashboard) if p["type"] != "row"}
    assert set(REQUIRED_PANELS) <= set(panels), set(REQUIRED_PANELS) - set(panels)
    for title, unit in REQUIRED_PANELS.items():
        assert panels[title]["fieldConfig"]["defaults"]["unit"] == unit, title
        read = {s.name for t in panels[title]["targets"] for s, _ in _selectors(_parse(t["expr"]))}
        assert read == PANEL_METRICS[title], title


def test_panels_are_grouped_into_rows_on_a_valid_grid(dashboard: dict[str, Any]) -> None:
    top = dashboard["panels"]
    rows = [p for p in top if p["type"] == "row"]
    assert {r["title"] for r in rows} == REQUIRED_ROWS
    assert top[0]["type"] == "row"  # every panel sits in a row
    titles = [p["title"] for p in _panels(dashboard)]
    assert len(titles) == len(set(titles))
    ids = [p["id"] for p in _panels(dashboard)]
    assert ids == list(range(1, len(ids) + 1))
    cells: set[tuple[int, int]] = set()
    for panel in top:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        own = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not own & cells, f"{panel['title']} overlaps another panel"
        cells |= own


def test_every_panel_sets_a_unit_and_reads_the_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    ref = {"type": "prometheus", "uid": "${datasource}"}
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel["datasource"] == ref, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == ref, panel["title"]


def test_template_variables(dashboard: dict[str, Any], exposition: dict[str, set[str]]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", *VARIABLES]
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    assert datasource["current"]["value"] == "prometheus"  # the provisioned uid
    for name in VARIABLES:
        var = variables[name]
        assert var["type"] == "query", name
        assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
        assert var["multi"] is True, name
        assert var["includeAll"] is True, name
        assert var["allValue"] == ".*", name  # also matches series without the label
        assert var["current"] == {"text": ["All"], "value": ["$__all"]}, name
        match = _LABEL_VALUES.match(var["query"])
        assert match, var["query"]
        assert match["label"] == f"llm_{name}", name
        (selector, _), *rest = _selectors(_parse(match["selector"]))
        assert not rest, var["query"]
        assert match["label"] in exposition[selector.name], var["query"]
        # cascading: each variable is filtered by the ones before it
        earlier = VARIABLES[: VARIABLES.index(name)]
        filters = {(m.name, m.value) for m in selector.matchers.matchers}
        assert filters == {(f"llm_{v}", f"__{v}__") for v in earlier}, var["query"]


# --- the queries -----------------------------------------------------------------------------


def test_every_query_is_valid_promql_with_the_variables_substituted(
    dashboard: dict[str, Any],
) -> None:
    """What the end-to-end test runs against Prometheus: All is `.*`, $__rate_interval 15s."""
    targets = _targets(dashboard)
    assert len(targets) >= 40
    for title, target in targets:
        expr = _substitute(target["expr"], rate="15s", value=".*")
        try:
            pp.parse(expr)
        except ValueError as e:
            pytest.fail(f"{title} ({target['refId']}): {expr!r} is not PromQL: {e}")


def test_usage_queries_sum_across_workers_a_rate_over_the_rate_interval(
    dashboard: dict[str, Any],
) -> None:
    """Every llm_* selector sits in `sum [by (...)] (rate(metric{filters}[$__rate_interval]))`
    with no per-worker grouping: series that move between workers on a rebalance then add up
    to a continuous line instead of one ending and another starting."""
    usage_selectors = 0
    for title, target in _targets(dashboard):
        tree = _parse(target["expr"])
        for node, _ in _walk(tree):
            if isinstance(node, pp.MatrixSelector):
                assert node.range == SENTINEL_RATE, f"{title}: window is not $__rate_interval"
        for selector, path in _selectors(tree):
            if not selector.name.startswith("llm_"):
                continue
            usage_selectors += 1
            where = f"{title} ({target['refId']}): {selector.name}"
            assert len(path) >= 3, f"{where} is not summed"
            matrix, rate, total = path[-1], path[-2], path[-3]
            assert isinstance(matrix, pp.MatrixSelector), f"{where} is not a range selector"
            assert isinstance(rate, pp.Call), where
            assert rate.func.name == "rate", f"{where}: {rate.func.name}, not rate"
            assert isinstance(total, pp.AggregateExpr), f"{where}: rate() not summed"
            assert str(total.op) == "sum", f"{where}: aggregated with {total.op}, not sum"
            if total.modifier is not None:
                assert total.modifier.type == pp.AggModifierType.By, f"{where}: not `sum by`"
                assert not set(total.modifier.labels) & PER_WORKER_LABELS, where
            filters = {(m.name, str(m.op), m.value) for m in selector.matchers.matchers}
            wanted = {(label, "MatchOp.Re", f"__{v}__") for label, v in FILTER_LABELS.items()}
            assert filters == wanted, f"{where}: filters {filters}"
    assert usage_selectors >= 20


def test_no_query_groups_usage_metrics_by_worker(dashboard: dict[str, Any]) -> None:
    for title, target in _targets(dashboard):
        tree = _parse(target["expr"])
        if not any(s.name.startswith("llm_") for s, _ in _selectors(tree)):
            continue
        for node, _ in _walk(tree):
            if isinstance(node, pp.AggregateExpr) and node.modifier is not None:
                assert not set(node.modifier.labels) & PER_WORKER_LABELS, title
            if isinstance(node, pp.BinaryExpr) and node.modifier is not None:
                matching = node.modifier.matching
                if matching is not None and matching.type == pp.LabelModifierType.Include:
                    assert not set(matching.labels) & PER_WORKER_LABELS, title


def test_every_metric_and_label_a_query_uses_is_in_the_worker_exposition(
    dashboard: dict[str, Any], exposition: dict[str, set[str]]
) -> None:
    used: set[str] = set()
    for title, target in _targets(dashboard):
        tree = _parse(target["expr"])
        for selector, _ in _selectors(tree):
            used.add(selector.name)
            assert selector.name in exposition, f"{title}: {selector.name} is not exported"
            for m in selector.matchers.matchers:
                assert m.name in exposition[selector.name] | TARGET_LABELS, (
                    f"{title}: {selector.name} has no label {m.name}"
                )
        for node, _ in _walk(tree):
            if isinstance(node, pp.AggregateExpr) and node.modifier is not None:
                below = set().union(*(exposition[s.name] for s, _ in _selectors(node.expr)))
                for label in node.modifier.labels:
                    assert label in below | TARGET_LABELS, f"{title}: no label {label} to group"
    # the issue's metrics are all on the dashboard
    for name in (
        *COUNTERS,
        "llm_request_duration_milliseconds_bucket",
        "usage_consumer_consumer_lag",
        "usage_consumer_dead_letters_total",
        "usage_consumer_unscraped_events",
        "usage_consumer_oldest_unscraped_age_seconds",
        "usage_consumer_cardinality_overflow",
        "usage_consumer_metric_series",
        "usage_consumer_cardinality_limit",
    ):
        assert name in used, name


def test_the_dlq_panel_reads_the_reason_label(exposition: dict[str, set[str]]) -> None:
    assert exposition["usage_consumer_dead_letters_total"] == {"reason"}
    assert exposition["usage_consumer_consumer_lag"] == {"topic", "partition"}


# --- provisioning ----------------------------------------------------------------------------


def test_provisioning_points_grafana_at_prometheus_and_the_dashboards(
    dashboard: dict[str, Any],
) -> None:
    datasource = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert re.search(r"^\s+type: prometheus$", datasource, re.M)
    assert re.search(r"^\s+url: http://prometheus:9090$", datasource, re.M)
    uid = re.search(r"^\s+uid: (\S+)$", datasource, re.M)
    assert uid
    default = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert default["current"]["value"] == uid[1]
    providers = (GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    assert re.search(r"^\s+type: file$", providers, re.M)
    assert re.search(r"^\s+path: /var/lib/grafana/dashboards$", providers, re.M)
