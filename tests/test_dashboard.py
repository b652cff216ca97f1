"""The generated Grafana dashboards (deploy/grafana): fresh, complete, and their queries sound.

One dashboard per metrics profile: `llm-usage.json` reads the `llm` profile's llm_* metrics,
`llm-usage-genai.json` the `genai` profile's gen_ai_client_* histograms; both end with the
worker's own rows (usage_consumer_*). Every check runs for each (`DASHBOARDS`).

No broker and no Prometheus: the metric and label names the queries use are checked against the
exposition of a worker registry built in-process the way `consumer.app.run_worker` builds it for
that profile, and every query is parsed as PromQL (promql-parser, a port of Prometheus' own
parser). The last tests break a dashboard on purpose to show the checks catch it.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from consumer.usage.profiles import build_trackers
from consumer.usage.provider import METER_NAME, build_meter_provider
from consumer.usage.tracker import UsageOptions
from tests.harness import COUNTERS

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
GENERATOR = GRAFANA / "dashboard.py"
DASHBOARDS_DIR = GRAFANA / "dashboards"
# {metrics profile: the dashboard that reads its metrics}: every dashboard Grafana provisions
# (the generator's `outputs()` must list the same; test_prometheus_e2e.py runs their queries).
DASHBOARDS = {
    "llm": DASHBOARDS_DIR / "llm-usage.json",
    "genai": DASHBOARDS_DIR / "llm-usage-genai.json",
}
REGENERATE = "regenerate it with `make dashboard` (.venv/bin/python deploy/grafana/dashboard.py)"

VARIABLES = ("provider", "model", "scenario", "user_tier")
SENTINEL_RATE = timedelta(seconds=987)  # what $__rate_interval becomes for the AST checks
TARGET_LABELS = {"instance", "job"}  # added by Prometheus at scrape time, not by the worker
PER_WORKER_LABELS = {"instance", "job", "pod", "host", "hostname"}
USAGE_PREFIXES = ("llm_", "gen_ai_")  # the usage metrics of either profile
OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}

GENAI_TOKENS = "gen_ai_client_token_usage_sum"
GENAI_TOKEN_BUCKETS = "gen_ai_client_token_usage_bucket"  # noqa: S105 (a metric name)
GENAI_REQUESTS = "gen_ai_client_operation_duration_seconds_count"
GENAI_DURATION_BUCKETS = "gen_ai_client_operation_duration_seconds_bucket"
GENAI_TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "system")

# A selector as a panel must read it: (metric, its matchers other than the variables' filters).
Selector = tuple[str, frozenset[tuple[str, str, str]]]
NO_MATCHERS: frozenset[tuple[str, str, str]] = frozenset()
ERRORS = frozenset({("error_type", "!=", "")})
IN_OUT = frozenset({("gen_ai_token_type", "=~", "input|output")})


def _plain(*metrics: str) -> set[Selector]:
    return {(m, NO_MATCHERS) for m in metrics}


def _token_type(token_type: str) -> frozenset[tuple[str, str, str]]:
    return frozenset({("gen_ai_token_type", "=", token_type)})


# The worker's panels, the same on both dashboards: {title: (unit, what it reads)}.
WORKER_PANELS: dict[str, tuple[str, set[Selector]]] = {
    "Consumer lag by partition": ("short", _plain("usage_consumer_consumer_lag")),
    "DLQ rate by reason": (
        "mps",
        _plain("usage_consumer_dead_letters_total", "usage_consumer_dead_letter_failures_total"),
    ),
    "Scrape-ack backlog: unscraped events per worker": (
        "short",
        _plain("usage_consumer_unscraped_events"),
    ),
    "Scrape-ack backlog: oldest unscraped event age": (
        "s",
        _plain("usage_consumer_oldest_unscraped_age_seconds"),
    ),
    "Cardinality overflow": ("none", _plain("usage_consumer_cardinality_overflow")),
    "Series per usage metric vs limit": (
        "short",
        _plain("usage_consumer_metric_series", "usage_consumer_cardinality_limit"),
    ),
    # what an SRE expects besides
    "Messages consumed and events recorded/s": (
        "mps",
        _plain("usage_consumer_messages_consumed_total", "usage_consumer_events_recorded_total"),
    ),
    "Commits/s": (
        "ops",
        _plain("usage_consumer_commits_total", "usage_consumer_commit_failures_total"),
    ),
    "Backpressure per worker": ("bool_on_off", _plain("usage_consumer_backpressure")),
    "Assigned partitions per worker": ("short", _plain("usage_consumer_assigned_partitions")),
    "Consumer lag": ("short", _plain("usage_consumer_consumer_lag")),
    "Workers": ("short", _plain("usage_consumer_assigned_partitions")),
}
WORKER_METRICS = (
    "usage_consumer_consumer_lag",
    "usage_consumer_dead_letters_total",
    "usage_consumer_unscraped_events",
    "usage_consumer_oldest_unscraped_age_seconds",
    "usage_consumer_cardinality_overflow",
    "usage_consumer_metric_series",
    "usage_consumer_cardinality_limit",
)

# The llm dashboard's usage panels (the list), by title.
LLM_PANELS: dict[str, tuple[str, set[Selector]]] = {
    # tokens per second by provider and model (input, output, cache, system)
    "Input tokens/s by provider and model": (
        "count:tokens/s",
        _plain("llm_token_usage_input_total"),
    ),
    "Output tokens/s by provider and model": (
        "count:tokens/s",
        _plain("llm_token_usage_output_total"),
    ),
    "Cache input tokens/s by provider and model": (
        "count:tokens/s",
        _plain("llm_token_cache_input_total"),
    ),
    "System tokens/s by provider and model": ("count:tokens/s", _plain("llm_token_system_total")),
    # requests and errors per second by status and error code
    "Requests/s by status": ("reqps", _plain("llm_request_count_total")),
    "Errors/s by error code": ("reqps", _plain("llm_request_errors_total")),
    "Latency p50/p95/p99 by model": ("ms", _plain("llm_request_duration_milliseconds_bucket")),
    "Top models by tokens/s": ("count:tokens/s", _plain("llm_token_total")),
    "Token mix per user tier": (
        "count:tokens/s",
        _plain(
            "llm_token_usage_input_total",
            "llm_token_usage_output_total",
            "llm_token_cache_input_total",
            "llm_token_system_total",
        ),
    ),
    "Tokens/s": ("count:tokens/s", _plain("llm_token_total")),
    "Requests/s": ("reqps", _plain("llm_request_count_total")),
    "Error ratio": ("percentunit", _plain("llm_request_errors_total", "llm_request_count_total")),
    "p95 latency": ("ms", _plain("llm_request_duration_milliseconds_bucket")),
}

# The genai dashboard's usage panels. Tokens are gen_ai_client_token_usage_sum per token type
# (input + output only where types are added up: cache_write is part of input); requests are
# the duration histogram's _count, errors its series with error_type; latency its buckets.
GENAI_PANELS: dict[str, tuple[str, set[Selector]]] = {
    "Tokens/s": ("count:tokens/s", {(GENAI_TOKENS, IN_OUT)}),
    "Requests/s": ("reqps", _plain(GENAI_REQUESTS)),
    "Error ratio": ("percentunit", {(GENAI_REQUESTS, ERRORS), (GENAI_REQUESTS, NO_MATCHERS)}),
    "p95 latency": ("s", _plain(GENAI_DURATION_BUCKETS)),
    "Tokens/s by token type": ("count:tokens/s", _plain(GENAI_TOKENS)),
    **{
        f"{label} tokens/s by provider and model": (
            "count:tokens/s",
            {(GENAI_TOKENS, _token_type(token_type))},
        )
        for token_type, label in zip(
            GENAI_TOKEN_TYPES,
            ("Input", "Output", "Cache read", "Cache write", "System"),
            strict=True,
        )
    },
    "Top models by tokens/s": ("count:tokens/s", {(GENAI_TOKENS, IN_OUT)}),
    "Token mix per user tier": ("count:tokens/s", _plain(GENAI_TOKENS)),
    "Tokens per request p50/p95 by token type": ("count:tokens", _plain(GENAI_TOKEN_BUCKETS)),
    "Requests/s by provider and model": ("reqps", _plain(GENAI_REQUESTS)),
    "Errors/s by error type": ("reqps", {(GENAI_REQUESTS, ERRORS)}),
    "Error ratio by provider and model": (
        "percentunit",
        {(GENAI_REQUESTS, ERRORS), (GENAI_REQUESTS, NO_MATCHERS)},
    ),
    "Latency p50/p95/p99 by provider and model": ("s", _plain(GENAI_DURATION_BUCKETS)),
}

REQUIRED_ROWS = {
    "Overview",
    "Tokens",
    "Requests and latency",
    "Consumer: throughput, lag and commits",
    "Consumer: scrape-ack backlog and backpressure",
    "Cardinality",
}


@dataclass(frozen=True)
class Case:
    """One dashboard and what it must hold for its metrics profile."""

    profile: str
    uid: str
    title: str
    labels: dict[str, str]
    """The label each template variable filters (and lists the values of)."""
    fixed_labels: frozenset[str]
    """Labels a usage selector may match on with a fixed value, besides the variables'."""
    panels: dict[str, tuple[str, set[Selector]]]
    """{title: (unit, the selectors it reads)}, the worker's panels included."""
    metrics: tuple[str, ...]
    """Metrics the dashboard must read somewhere."""
    min_targets: int

    @property
    def path(self) -> Path:
        return DASHBOARDS[self.profile]


CASES = {
    "llm": Case(
        profile="llm",
        uid="llm-usage-consumer",
        title="LLM usage",
        labels={v: f"llm_{v}" for v in VARIABLES},
        fixed_labels=frozenset(),
        panels={**LLM_PANELS, **WORKER_PANELS},
        metrics=(*COUNTERS, "llm_request_duration_milliseconds_bucket", *WORKER_METRICS),
        min_targets=40,
    ),
    "genai": Case(
        profile="genai",
        uid="llm-usage-consumer-genai",
        title="LLM usage (GenAI)",
        labels={
            "provider": "gen_ai_provider_name",
            "model": "gen_ai_response_model",
            "scenario": "tingly_scenario",
            "user_tier": "tingly_user_tier",
        },
        fixed_labels=frozenset({"gen_ai_token_type", "error_type"}),
        panels={**GENAI_PANELS, **WORKER_PANELS},
        metrics=(
            GENAI_TOKENS,
            GENAI_TOKEN_BUCKETS,
            GENAI_REQUESTS,
            GENAI_DURATION_BUCKETS,
            *WORKER_METRICS,
        ),
        min_targets=40,
    ),
}
assert set(CASES) == set(DASHBOARDS)


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


SENTINELS = {f"__{name}__" for name in VARIABLES}


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


def _matchers(selector: Any) -> set[tuple[str, str, str]]:
    return {(m.name, OPS[str(m.op)], m.value) for m in selector.matchers.matchers}


def _fixed(selector: Any) -> frozenset[tuple[str, str, str]]:
    """The selector's matchers other than the template variables' filters."""
    return frozenset(m for m in _matchers(selector) if m[2] not in SENTINELS)


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows included, and the panels of collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in _panels(dashboard) for t in p.get("targets", [])]


def _is_usage(name: str) -> bool:
    return name.startswith(USAGE_PREFIXES)


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_]\w*)\)$")


@functools.cache
def _load(profile: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARDS[profile].read_text(encoding="utf-8"))
    return loaded


@functools.cache
def _exposition(profile: str) -> dict[str, set[str]]:
    """{sample name: label names} of a worker registry of `profile` wired as `run_worker` wires
    it, after realistic events and with every labelled worker metric given a child."""
    limit = 10_000
    registry = CollectorRegistry(auto_describe=True)
    provider = build_meter_provider(registry, limit)
    (tracker,) = build_trackers(profile, provider.get_meter(METER_NAME), limit)
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
                cache_write_tokens=4,
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


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return _load_generator()


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    found: Case = CASES[request.param]
    return found


@pytest.fixture(scope="module")
def dashboard(case: Case) -> dict[str, Any]:
    return _load(case.profile)


@pytest.fixture(scope="module")
def exposition(case: Case) -> dict[str, set[str]]:
    return _exposition(case.profile)


# --- the JSON is the generator's -------------------------------------------------------------


def test_the_generator_writes_exactly_the_provisioned_dashboards(generator: ModuleType) -> None:
    assert generator.outputs() == DASHBOARDS
    # Grafana provisions the whole directory: nothing else (a stale file of a renamed
    # dashboard, say) may sit there.
    assert sorted(DASHBOARDS_DIR.glob("*.json")) == sorted(DASHBOARDS.values())


def test_checked_in_json_is_what_the_generator_writes(generator: ModuleType, case: Case) -> None:
    generated = generator.render(case.profile)
    checked_in = case.path.read_text(encoding="utf-8") if case.path.exists() else ""
    sdk = importlib.metadata.version("grafana-foundation-sdk")
    assert generated == checked_in, (
        f"{case.path.relative_to(ROOT)} is stale: {REGENERATE} (generated here with "
        f"grafana-foundation-sdk {sdk}; pyproject.toml pins the version the JSON was made with)"
    )


def test_generation_is_deterministic_and_check_mode_reports_staleness(
    generator: ModuleType, case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = generator.render(case.profile)
    assert generator.render(case.profile) == first  # no timestamps, no random ids
    out = tmp_path / case.path.name
    only = ["--profile", case.profile, "--output-dir", str(tmp_path)]
    assert generator.main(["--check", *only]) == 1  # missing
    assert generator.main(only) == 0
    assert out.read_text(encoding="utf-8") == first
    assert generator.main(["--check", *only]) == 0
    title = f'"title": {json.dumps(case.title)}'
    assert first.count(title) == 1
    out.write_text(first.replace(title, title[:-1] + ' (edited)"'), encoding="utf-8")
    capsys.readouterr()
    assert generator.main(["--check", *only]) == 1
    assert "make dashboard" in capsys.readouterr().err
    keys = list(json.loads(first))
    assert keys == sorted(keys)


def test_without_a_profile_the_generator_writes_and_checks_every_dashboard(
    generator: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `make dashboard` runs: every dashboard, and --check fails if any one is stale."""
    assert generator.main(["--output-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in DASHBOARDS.values())
    for profile, path in DASHBOARDS.items():
        assert (tmp_path / path.name).read_text(encoding="utf-8") == generator.render(profile)
    assert generator.main(["--check", "--output-dir", str(tmp_path)]) == 0
    for path in DASHBOARDS.values():
        (tmp_path / path.name).unlink()
        capsys.readouterr()
        assert generator.main(["--check", "--output-dir", str(tmp_path)]) == 1
        assert path.name in capsys.readouterr().err
        assert generator.main(["--output-dir", str(tmp_path)]) == 0


def test_dashboard_identity_and_schema(dashboard: dict[str, Any], case: Case) -> None:
    assert dashboard["uid"] == case.uid
    assert dashboard["title"] == case.title
    assert isinstance(dashboard["schemaVersion"], int)
    assert 36 <= dashboard["schemaVersion"] <= 41  # Grafana 10.x to 11.6
    assert "id" not in dashboard  # Grafana assigns it
    assert "version" not in dashboard
    builtin = dashboard["annotations"]["list"]
    assert [a["builtIn"] for a in builtin] == [1]


def test_the_dashboards_have_distinct_uids_and_titles() -> None:
    """One provisioning folder holds them all: Grafana keeps one dashboard per uid."""
    uids = [_load(p)["uid"] for p in DASHBOARDS]
    titles = [_load(p)["title"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)


def test_the_worker_rows_are_the_same_on_every_dashboard() -> None:
    """usage_consumer_* does not depend on the profile: those rows are shared verbatim."""
    worker_rows = REQUIRED_ROWS - {"Overview", "Tokens", "Requests and latency"}

    def rows(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
        out, keep = [], False
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                keep = panel["title"] in worker_rows
            if keep:
                out.append({k: v for k, v in panel.items() if k not in {"id", "gridPos"}})
        return out

    first, *others = (rows(_load(p)) for p in DASHBOARDS)
    assert len(first) > len(worker_rows)
    for other in others:
        assert other == first


# --- structure -------------------------------------------------------------------------------


def check_required_panels(dashboard: dict[str, Any], case: Case) -> None:
    panels = {p["title"]: p for p in _panels(dashboard) if p["type"] != "row"}
    assert set(case.panels) <= set(panels), set(case.panels) - set(panels)
    for title, (unit, reads) in case.panels.items():
        assert panels[title]["fieldConfig"]["defaults"]["unit"] == unit, title
        read = {
            (s.name, _fixed(s))
            for t in panels[title]["targets"]
            for s, _ in _selectors(_parse(t["expr"]))
        }
        assert read == reads, f"{title} reads {read}"


def test_every_required_panel_exists_with_its_unit_and_metrics(
    dashboard: dict[str, Any], case: Case
) -> None:
    check_required_panels(dashboard, case)


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


def check_template_variables(
    dashboard: dict[str, Any], case: Case, exposition: dict[str, set[str]]
) -> None:
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
        assert match["label"] == case.labels[name], name
        (selector, _), *rest = _selectors(_parse(match["selector"]))
        assert not rest, var["query"]
        assert _is_usage(selector.name), var["query"]  # the profile's own series
        assert match["label"] in exposition.get(selector.name, set()), var["query"]
        # cascading: each variable is filtered by the ones before it
        earlier = VARIABLES[: VARIABLES.index(name)]
        filters = _matchers(selector)
        assert filters == {(case.labels[v], "=~", f"__{v}__") for v in earlier}, var["query"]


def test_template_variables(
    dashboard: dict[str, Any], case: Case, exposition: dict[str, set[str]]
) -> None:
    check_template_variables(dashboard, case, exposition)


# --- the queries -----------------------------------------------------------------------------


def test_every_query_is_valid_promql_with_the_variables_substituted(
    dashboard: dict[str, Any], case: Case
) -> None:
    """What the end-to-end test runs against Prometheus: All is `.*`, $__rate_interval 15s."""
    targets = _targets(dashboard)
    assert len(targets) >= case.min_targets
    for title, target in targets:
        expr = _substitute(target["expr"], rate="15s", value=".*")
        try:
            pp.parse(expr)
        except ValueError as e:
            pytest.fail(f"{title} ({target['refId']}): {expr!r} is not PromQL: {e}")


def check_usage_queries(dashboard: dict[str, Any], case: Case) -> None:
    usage_selectors = 0
    wanted = {(case.labels[v], "=~", f"__{v}__") for v in VARIABLES}
    for title, target in _targets(dashboard):
        tree = _parse(target["expr"])
        for node, _ in _walk(tree):
            if isinstance(node, pp.MatrixSelector):
                assert node.range == SENTINEL_RATE, f"{title}: window is not $__rate_interval"
        for selector, path in _selectors(tree):
            if not _is_usage(selector.name):
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
            filters = _matchers(selector)
            assert wanted <= filters, f"{where}: filters {filters}"
            for label, _, value in filters - wanted:
                assert label in case.fixed_labels, f"{where}: unexpected matcher on {label}"
                assert value not in SENTINELS, f"{where}: a variable filters {label}"
    assert usage_selectors >= 20


def test_usage_queries_sum_across_workers_a_rate_over_the_rate_interval(
    dashboard: dict[str, Any], case: Case
) -> None:
    """Every usage selector sits in `sum [by (...)] (rate(metric{filters}[$__rate_interval]))`
    with no per-worker grouping: series that move between workers on a rebalance then add up
    to a continuous line instead of one ending and another starting."""
    check_usage_queries(dashboard, case)


def check_no_worker_grouping(dashboard: dict[str, Any]) -> None:
    for title, target in _targets(dashboard):
        tree = _parse(target["expr"])
        if not any(_is_usage(s.name) for s, _ in _selectors(tree)):
            continue
        for node, _ in _walk(tree):
            if isinstance(node, pp.AggregateExpr) and node.modifier is not None:
                assert not set(node.modifier.labels) & PER_WORKER_LABELS, title
            if isinstance(node, pp.BinaryExpr) and node.modifier is not None:
                matching = node.modifier.matching
                if matching is not None and matching.type == pp.LabelModifierType.Include:
                    assert not set(matching.labels) & PER_WORKER_LABELS, title


def test_no_query_groups_usage_metrics_by_worker(dashboard: dict[str, Any]) -> None:
    check_no_worker_grouping(dashboard)


def check_exposition(
    dashboard: dict[str, Any], case: Case, exposition: dict[str, set[str]]
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
    # the metrics are all on the dashboard
    for name in case.metrics:
        assert name in used, name


def test_every_metric_and_label_a_query_uses_is_in_the_worker_exposition(
    dashboard: dict[str, Any], case: Case, exposition: dict[str, set[str]]
) -> None:
    check_exposition(dashboard, case, exposition)


def test_the_dlq_panel_reads_the_reason_label(exposition: dict[str, set[str]]) -> None:
    assert exposition["usage_consumer_dead_letters_total"] == {"reason"}
    assert exposition["usage_consumer_consumer_lag"] == {"topic", "partition"}


def test_each_profile_exposition_holds_only_its_own_usage_metrics() -> None:
    """The exposition check is only as good as the exposition: each has its profile's usage
    metrics and not the other's."""
    for profile, prefix in (("llm", "llm_"), ("genai", "gen_ai_")):
        usage = {n for n in _exposition(profile) if _is_usage(n)}
        assert usage, profile
        assert all(n.startswith(prefix) for n in usage), (profile, usage)
    genai = _exposition("genai")
    assert "error_type" in genai[GENAI_REQUESTS]
    assert "error_type" not in genai[GENAI_TOKENS]
    assert "gen_ai_token_type" in genai[GENAI_TOKENS]


# --- the genai profile's semantics ----------------------------------------------------------


def _token_types(selector: Any) -> set[str]:
    """The gen_ai_token_type values the selector admits."""
    admitted = set(GENAI_TOKEN_TYPES)
    for m in selector.matchers.matchers:
        if m.name != "gen_ai_token_type":
            continue
        op = OPS[str(m.op)]
        test: Callable[[str], bool] = {
            "=": lambda t, v=m.value: t == v,
            "!=": lambda t, v=m.value: t != v,
            "=~": lambda t, v=m.value: re.fullmatch(v, t) is not None,
            "!~": lambda t, v=m.value: re.fullmatch(v, t) is None,
        }[op]
        admitted = {t for t in admitted if test(t)}
    return admitted


def check_genai_token_types(dashboard: dict[str, Any]) -> int:
    """gen_ai_client_token_usage holds one series per token type, and cache_write tokens are
    already part of input: a sum over types must not take both, and a quantile of the token
    histogram must keep the types apart. Returns the selectors checked."""
    checked = 0
    for title, target in _targets(dashboard):
        for selector, path in _selectors(_parse(target["expr"])):
            if selector.name not in {GENAI_TOKENS, GENAI_TOKEN_BUCKETS}:
                continue
            checked += 1
            where = f"{title} ({target['refId']})"
            total = path[-3]  # sum by (...) (rate(...)), held by check_usage_queries
            by = set(total.modifier.labels) if total.modifier is not None else set()
            types = _token_types(selector)
            assert types, f"{where}: matches no token type"
            if "gen_ai_token_type" in by:
                continue
            if selector.name == GENAI_TOKEN_BUCKETS:
                assert len(types) == 1, f"{where}: a quantile over token types {types}"
            assert not {"input", "cache_write"} <= types, (
                f"{where}: adds cache_write to input (types {sorted(types)})"
            )
    return checked


def check_genai_errors(dashboard: dict[str, Any]) -> int:
    """Errors are the duration series with error_type (canceled requests carry none): every
    matcher on error_type is exactly `error_type!=""`, on the duration's _count."""
    checked = 0
    for title, target in _targets(dashboard):
        for selector, _ in _selectors(_parse(target["expr"])):
            on_error = {m for m in _matchers(selector) if m[0] == "error_type"}
            if not on_error:
                continue
            checked += 1
            where = f"{title} ({target['refId']})"
            assert selector.name == GENAI_REQUESTS, f"{where}: error_type on {selector.name}"
            assert on_error == set(ERRORS), f"{where}: errors selected by {on_error}"
    return checked


def test_genai_token_queries_never_add_cache_write_to_input() -> None:
    assert check_genai_token_types(_load("genai")) >= 10


def test_genai_errors_are_the_duration_series_with_error_type() -> None:
    assert check_genai_errors(_load("genai")) >= 3


# --- the checks catch a broken dashboard -------------------------------------------------------


def _edit_expr(title: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(dashboard: dict[str, Any]) -> None:
        panel = next(p for p in _panels(dashboard) if p["title"] == title)
        assert any(old in t["expr"] for t in panel["targets"]), f"{old!r} not in {title}"
        for target in panel["targets"]:
            target["expr"] = target["expr"].replace(old, new)

    return edit


def _edit_unit(title: str, unit: str) -> Callable[[dict[str, Any]], None]:
    def edit(dashboard: dict[str, Any]) -> None:
        panel = next(p for p in _panels(dashboard) if p["title"] == title)
        panel["fieldConfig"]["defaults"]["unit"] = unit

    return edit


def _edit_variable(name: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(dashboard: dict[str, Any]) -> None:
        var = next(v for v in dashboard["templating"]["list"] if v["name"] == name)
        assert old in var["query"]
        var["query"] = var["query"].replace(old, new)

    return edit


Check = Callable[[dict[str, Any], Case], object]
CHECKS: dict[str, Check] = {
    "panels": check_required_panels,
    "usage": check_usage_queries,
    "worker": lambda d, _: check_no_worker_grouping(d),
    "exposition": lambda d, c: check_exposition(d, c, _exposition(c.profile)),
    "variables": lambda d, c: check_template_variables(d, c, _exposition(c.profile)),
    "token_types": lambda d, _: check_genai_token_types(d),
    "errors": lambda d, _: check_genai_errors(d),
}


@pytest.mark.parametrize(
    ("profile", "edit", "check", "message"),
    [
        pytest.param(
            "genai",
            _edit_expr("Tokens/s", ', gen_ai_token_type=~"input|output"', ""),
            "token_types",
            "adds cache_write to input",
            id="genai-tokens-summed-over-all-types",
        ),
        pytest.param(
            "genai",
            _edit_expr("Token mix per user tier", ", gen_ai_token_type)", ")"),
            "token_types",
            "adds cache_write to input",
            id="genai-mix-not-by-token-type",
        ),
        pytest.param(
            "genai",
            _edit_expr("Tokens per request p50/p95 by token type", ", gen_ai_token_type)", ")"),
            "token_types",
            "a quantile over token types",
            id="genai-token-quantile-over-types",
        ),
        pytest.param(
            "genai",
            _edit_expr("Error ratio", 'error_type!=""', 'error_type=~".+"'),
            "errors",
            "errors selected by",
            id="genai-errors-by-another-matcher",
        ),
        pytest.param(
            "genai",
            _edit_expr("Errors/s by error type", 'error_type!=""', 'gen_ai_token_type!=""'),
            "panels",
            "Errors/s by error type reads",
            id="genai-errors-panel-without-error-type",
        ),
        pytest.param(
            "genai",
            _edit_expr("Latency p50/p95/p99 by provider and model", "$__rate_interval", "5m"),
            "usage",
            "window is not",
            id="genai-fixed-window",
        ),
        pytest.param(
            "genai",
            _edit_expr("Requests/s", "sum (rate(", "max (rate("),
            "usage",
            "not sum",
            id="genai-max-not-sum",
        ),
        pytest.param(
            "genai",
            _edit_expr("Requests/s", "sum (rate(", "sum (irate("),
            "usage",
            "not rate",
            id="genai-irate",
        ),
        pytest.param(
            "genai",
            _edit_expr("Requests/s", ', tingly_user_tier=~"$user_tier"', ""),
            "usage",
            "filters",
            id="genai-filter-missing",
        ),
        pytest.param(
            "genai",
            _edit_expr(
                "Requests/s",
                "{gen_ai_provider_name",
                '{tingly_streaming="true", gen_ai_provider_name',
            ),
            "usage",
            "unexpected matcher on tingly_streaming",
            id="genai-stray-matcher",
        ),
        pytest.param(
            "genai",
            _edit_expr(
                "Requests/s by provider and model",
                "sum by (gen_ai_provider_name",
                "sum by (instance, gen_ai_provider_name",
            ),
            "worker",
            "Requests/s by provider and model",
            id="genai-grouped-by-instance",
        ),
        pytest.param(
            "genai",
            _edit_expr("Requests/s", GENAI_REQUESTS, "gen_ai_client_operation_duration_count"),
            "exposition",
            "is not exported",
            id="genai-unknown-metric",
        ),
        pytest.param(
            "genai",
            _edit_expr("Errors/s by error type", "error_type) (", "error_code) ("),
            "exposition",
            "no label error_code to group",
            id="genai-unknown-label",
        ),
        pytest.param(
            "genai",
            _edit_unit("p95 latency", "ms"),
            "panels",
            "p95 latency",
            id="genai-latency-unit",
        ),
        pytest.param(
            "genai",
            _edit_variable("model", ", gen_ai_response_model)", ", llm_model)"),
            "variables",
            "model",
            id="genai-variable-of-the-llm-profile",
        ),
        pytest.param(
            "llm",
            _edit_expr("Tokens/s", "llm_token_total", GENAI_TOKENS),
            "exposition",
            "is not exported",
            id="llm-reads-a-genai-metric",
        ),
        pytest.param(
            "llm",
            _edit_expr("Requests/s", "{llm_provider", '{llm_streaming="true", llm_provider'),
            "usage",
            "unexpected matcher on llm_streaming",
            id="llm-stray-matcher",
        ),
    ],
)
def test_the_checks_catch_a_broken_dashboard(
    profile: str, edit: Callable[[dict[str, Any]], None], check: str, message: str
) -> None:
    case = CASES[profile]
    original = _load(profile)
    CHECKS[check](original, case)  # passes as generated
    broken = copy.deepcopy(original)
    edit(broken)
    with pytest.raises(AssertionError, match=re.escape(message)):
        CHECKS[check](broken, case)


# --- provisioning ----------------------------------------------------------------------------


def test_provisioning_points_grafana_at_prometheus_and_the_dashboards(
    dashboard: dict[str, Any], case: Case
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
    # One file provider loads the whole directory the dashboards are generated into (compose
    # mounts deploy/grafana/dashboards there): every dashboard, whatever its file name.
    assert re.search(r"^\s+path: /var/lib/grafana/dashboards$", providers, re.M)
    assert case.path.parent == DASHBOARDS_DIR
