"""A real Prometheus scraping two real workers, with the project's rules and Grafana dashboards.

Prometheus (Debian's /usr/bin/prometheus, `make prometheus` installs it) scrapes both workers
every second and evaluates deploy/prometheus/rules every second. The workers run the `both`
metrics profile, so one run holds the `llm` and the `genai` rules and dashboards to real series.
The test produces a known stream in two phases (the second worker joins in between, so a
rebalance moves partitions, and their counts, from one worker's series to the other's), then
asks Prometheus's HTTP API:

- every usage counter, summed over the workers, equals the produced totals series by series;
- Prometheus's scrapes are gzip-compressed (the workers count responses by encoding);
- every `gen_ai_client_token_usage_sum` by provider, model and token type equals the produced
  tokens, and every duration `_count` the produced requests (errors: those with `error_type`);
- every series selector the recording and alerting rules read matches series, every recorded
  series exists, every rule evaluates without error, and no alert condition on the worker holds
  in this healthy run (the genai alerts judge the workload: the synthetic mix fails about 5% of
  requests by design, so whether the error-ratio condition holds for a model is sampling; their
  arithmetic is held by promtool, their selectors here);
- every query of the Grafana dashboards (and of their template variables) returns data.

For the alerts, the test checks each vector selector rather than "the expression without its
final comparison": that is not well defined for compound conditions (`A > 1000 and deriv(A) >
0`, `A unless B`, `absent(...)`), while a selector is where a rule meets the exposition (metric
and label names and values), so a typo there is exactly what only a real scrape can catch. The
arithmetic above the selectors is covered, with exact values, by the promtool unit tests
(tests/test_prometheus_rules.py). Two selectors match on label values that a healthy run never
produces (a partition held by dead letters, an unclean hand-over); for them the test checks that
the metric exists with that label.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest
import yaml
from confluent_kafka import Producer

from consumer.devtools.produce import synthetic_events
from tests.conftest import TopicFactory
from tests.harness import (
    Series,
    WorkerProcess,
    cache_read_tokens,
    committed_offsets,
    end_offsets,
    expected_series,
    free_port,
    total,
)

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
# Alerts on the traffic the gateways see rather than on the worker (see the module docstring).
WORKLOAD_ALERTS = {"UsageConsumerGenAIErrorRatioHigh", "UsageConsumerGenAILatencyHigh"}
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"  # Debian's package
JOB = "llm-usage-consumer"
PARTITIONS = 6

# Selectors that match nothing in a healthy run, and why; the test still checks that the metric
# exists with the label they match on.
EMPTY_WHEN_HEALTHY = {
    'usage_consumer_partition_paused{job="llm-usage-consumer",reason="dead_letter"}': (
        "no dead-letter write fails"
    ),
    'usage_consumer_revocations_total{job="llm-usage-consumer",outcome!="covered"}': (
        "every hand-over is covered by a scrape"
    ),
}

# Grafana's built-in variables, as Grafana would expand them for a 1 s scrape interval.
GRAFANA_BUILTINS = {
    "__rate_interval": "15s",
    "__interval": "15s",
    "__range": "15s",
    "__interval_ms": "15000",
    "__range_s": "15",
    "__range_ms": "15000",
}

INVALID = [b"", b"not json", b"[1, 2, 3]", b'{"schema_version": 2, "event_id": "v2"}']


# --- PromQL and dashboard helpers (plain functions, tested below without a broker) ---------


def _selector_text(node: pp.VectorSelector) -> str:
    matchers = str(node.matchers) if node.matchers.matchers else ""
    return (node.name or "") + matchers


def vector_selectors(expr: str) -> list[str]:
    """The vector selectors of a PromQL expression (`name{matchers}`), without ranges/offsets."""
    found: list[str] = []

    def visit(node: pp.Expr) -> None:
        if isinstance(node, pp.VectorSelector):
            found.append(_selector_text(node))

    pp.walk(pp.parse(expr), visit)
    return list(dict.fromkeys(found))


def _matched_labels(selector: str) -> set[str]:
    node = pp.parse(selector)
    assert isinstance(node, pp.VectorSelector), selector
    return {m.name for m in node.matchers.matchers}


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))  # rows hold their collapsed panels


def _substitute(expr: str, variables: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in variables:
            raise AssertionError(f"unknown dashboard variable ${name} in {expr}")
        return variables[name]

    pattern = r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)"
    return re.sub(pattern, value, expr)


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every label_values() variable query.

    Multi-value variables become `.*`, Grafana's interval variables a 15 s window; a variable
    query label_values(selector, label) becomes `count by (label) (selector)`.
    """
    templating = dashboard.get("templating", {}).get("list", [])
    variables = dict(GRAFANA_BUILTINS)
    for var in templating:
        if var.get("type") in {"query", "custom"}:
            variables[var["name"]] = ".*"
        elif var.get("type") in {"interval", "constant", "textbox"}:
            variables[var["name"]] = str(var.get("query") or var["current"]["value"])
    out = []
    for panel in dashboard_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = f"panel {panel.get('title')!r} target {target.get('refId')}"
                out.append((where, _substitute(target["expr"], variables)))
    for var in templating:
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        if var.get("type") != "query" or not query.startswith("label_values("):
            continue
        args = query[len("label_values(") : -1]
        selector, _, label = args.rpartition(",")
        selector = _substitute(selector, variables) or '{__name__=~".+"}'
        promql = f"count by ({label.strip()}) ({selector})"
        out.append((f"variable ${var['name']}", promql))
    return out


# --- Prometheus --------------------------------------------------------------------------------


class PrometheusServer:
    """/usr/bin/prometheus scraping `targets` every second with the project's rules."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        self.port = free_port()
        self.dir = tmp / "prometheus"
        self.dir.mkdir()
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES_DIR / "*.yml")],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
        }
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.log_path = self.dir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log()}"
            with contextlib.suppress(OSError):
                if self._get("/-/ready")[0] == 200:
                    return self
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after 30s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def api(self, path: str, **params: str) -> Any:
        status, body = self._get(f"/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert status == 200, f"{path} {params}: HTTP {status}: {body[:2000]}"
        answer = json.loads(body)
        assert answer["status"] == "success", f"{path} {params}: {body[:2000]}"
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data}"
        return list(data["result"])


def _wait(check: Callable[[], str], timeout: float, what: str) -> None:
    """Polls `check` (it returns "" once satisfied, else why not) until it passes."""
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        why = check()
        if not why:
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached after {timeout}s: {why}")


def _usage_totals(prom: PrometheusServer, names: set[str]) -> Series:
    """Prometheus's view of the usage series: summed over workers, by every other label."""
    out: Series = {}
    for name in sorted(names):
        for sample in prom.query(f'sum without (instance) ({name}{{job="{JOB}"}})'):
            labels = frozenset((k, v) for k, v in sample["metric"].items() if v and k != "job")
            out[(name, labels)] = float(sample["value"][1])
    return out


def _diff(got: Series, want: Series) -> str:
    lines = []
    for key in sorted(set(got) | set(want), key=str):
        if got.get(key) != want.get(key):
            lines.append(
                f"{key[0]}{dict(sorted(key[1]))}: got {got.get(key)}, want {want.get(key)}"
            )
    return f"{len(lines)} series differ:\n" + "\n".join(lines[:20])


def _produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for event in events:
        producer.produce(topic, json.dumps(event).encode(), key=event["event_id"].encode())
        producer.poll(0)
    for n, value in enumerate(INVALID):
        producer.produce(topic, value, key=f"bad-{n}-{events[0]['event_id']}".encode())
    assert producer.flush(30) == 0


def _rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in sorted(RULES_DIR.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


@pytest.mark.integration
def test_prometheus_scrapes_workers_and_evaluates_rules_and_dashboard(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    if not Path(PROMETHEUS).is_file():
        pytest.fail("prometheus not found: `make prometheus` installs it (Debian's prometheus)")
    topic = topic_factory(PARTITIONS)
    # Small batches and a low unscraped-events bound make the workers pause for Prometheus's
    # scrapes now and then, so the backpressure series exist too.
    args = (
        *("--batch-size", "200", "--batch-wait-ms", "50", "--max-unscraped-events", "150"),
        *("--metrics-profile", "both"),
    )
    workers = [WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path, *args) for _ in "12"]
    prom = PrometheusServer(tmp_path, [f"127.0.0.1:{w.port}" for w in workers])
    first = list(synthetic_events(500, seed=21))
    second = list(synthetic_events(1000, seed=22))
    events = first + second
    try:
        prom.start()
        workers[0].start().wait_ready()

        # Phase 1: one worker owns all six partitions.
        _produce(kafka_bootstrap, topic, first)
        _wait(
            lambda: _events_seen(prom, len(first), len(INVALID)), 60, "phase 1 seen by Prometheus"
        )

        # Phase 2: a second worker joins; the first hands three partitions over (a Prometheus
        # scrape covers them), and both consume the rest.
        workers[1].start().wait_ready()
        _wait(lambda: _balanced(workers), 60, "both workers owning partitions")
        _produce(kafka_bootstrap, topic, second)
        _wait(
            lambda: _events_seen(prom, len(events), 2 * len(INVALID)),
            60,
            "phase 2 seen by Prometheus",
        )

        # Prometheus's scrapes alone let the workers commit everything.
        ends = end_offsets(kafka_bootstrap, topic, PARTITIONS)
        _wait(
            lambda: _committed(kafka_bootstrap, group_id, topic, ends), 30, "committed to the end"
        )

        # Every usage series, summed over the two workers, equals the produced totals.
        want = expected_series(events)
        _wait(
            lambda: (
                ""
                if (got := _usage_totals(prom, {n for n, _ in want})) == want
                else _diff(got, want)
            ),
            10,
            "exact usage totals in Prometheus",
        )
        # The genai profile's histograms, from the same events: tokens by type and requests.
        _wait(lambda: _genai_totals(prom, events), 10, "exact genai totals in Prometheus")
        # Prometheus asks for gzip and gets it: both workers served it gzipped scrapes (the
        # counter Prometheus reads counts the responses completed before that scrape; the
        # harness's own scrapes ask for no encoding).
        gzipped = {
            s["metric"]["instance"]: float(s["value"][1])
            for s in prom.query(
                f'usage_consumer_scrape_responses_total{{job="{JOB}",encoding="gzip"}}'
            )
        }
        assert set(gzipped) == {f"127.0.0.1:{w.port}" for w in workers}, gzipped
        assert min(gzipped.values()) >= 1, gzipped
        # ... though both workers hold series of their own (the sum is what is exact).
        instances = {s["metric"]["instance"] for s in prom.query("llm_request_count_total")}
        assert instances == {f"127.0.0.1:{w.port}" for w in workers}

        # Lag gauges of all six partitions, once librdkafka's statistics have arrived.
        _wait(
            lambda: _count_is(prom, f'usage_consumer_consumer_lag{{topic="{topic}"}}', PARTITIONS),
            30,
            "a lag gauge per partition",
        )
        _wait(lambda: _rules_healthy(prom), 15, "every rule loaded and evaluated")
        _check_rule_selectors(prom)
        _wait(lambda: _no_alert_condition(prom), 15, "no alert condition in a healthy run")
        verified = _check_dashboard(prom)
        print(f"dashboard queries verified: {verified}")
    finally:
        try:
            for worker in workers:
                if worker.proc is not None:
                    worker.stop(signal.SIGTERM, 30)
        finally:
            prom.stop()


def _events_seen(prom: PrometheusServer, recorded: int, dead_letters: int) -> str:
    got = (
        prom.query(f'sum(usage_consumer_events_recorded_total{{job="{JOB}"}})'),
        prom.query(f'sum(usage_consumer_dead_letters_total{{job="{JOB}"}})'),
    )
    values = tuple(float(r[0]["value"][1]) if r else None for r in got)
    return "" if values == (recorded, dead_letters) else f"(recorded, dead letters) = {values}"


def _balanced(workers: list[WorkerProcess]) -> str:
    owned = [total(w.scrape(), "usage_consumer_assigned_partitions") for w in workers]
    return "" if sum(owned) == PARTITIONS and min(owned) > 0 else f"assigned {owned}"


def _committed(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> str:
    committed = committed_offsets(bootstrap, group, topic, PARTITIONS)
    return "" if committed == ends else f"committed {committed}, ends {ends}"


def _count_is(prom: PrometheusServer, selector: str, count: int) -> str:
    got = prom.query(selector)
    return "" if len(got) == count else f"{selector}: {len(got)} series: {got}"


def _rules_healthy(prom: PrometheusServer) -> str:
    loaded = [rule for group in prom.api("rules")["groups"] for rule in group["rules"]]
    expected = _rules()
    names = sorted(r.get("name", "") for r in loaded)
    wanted = sorted(r.get("record") or r["alert"] for r in expected)
    if names != wanted:
        return f"loaded rules {names}, files hold {wanted}"
    bad = [
        (r["name"], r.get("health"), r.get("lastError"))
        for r in loaded
        if r.get("health") != "ok" or r.get("lastError")
    ]
    return f"unhealthy rules: {bad}" if bad else ""


def _check_rule_selectors(prom: PrometheusServer) -> None:
    """Every selector the rules read matches series; every recorded series exists."""
    failures = []
    selectors = {s for rule in _rules() for s in vector_selectors(rule["expr"])}
    assert set(EMPTY_WHEN_HEALTHY) <= selectors, sorted(selectors)
    for selector in sorted(selectors):
        result = prom.query(selector)
        if selector in EMPTY_WHEN_HEALTHY:
            if result:
                failures.append(f"{selector} should be empty ({EMPTY_WHEN_HEALTHY[selector]})")
            name = selector.partition("{")[0]
            relaxed = prom.query(f'{name}{{job="{JOB}"}}')
            labels = _matched_labels(selector) - {"job"}
            if not any(labels <= set(s["metric"]) for s in relaxed):
                failures.append(f"{name}{{job}} has no series with {labels}: {relaxed}")
        elif not result:
            failures.append(f"{selector} matches nothing")
    for rule in _rules():
        if "record" in rule and not prom.query(rule["record"]):
            failures.append(f"recorded series {rule['record']} is empty")
    assert not failures, "\n".join(failures)


def _no_alert_condition(prom: PrometheusServer) -> str:
    active = []
    for rule in _rules():
        if "alert" in rule and rule["alert"] not in WORKLOAD_ALERTS:
            result = prom.query(rule["expr"])
            if result:
                active.append(f"{rule['alert']}: {rule['expr']} -> {result}")
    return "\n".join(active)


def _check_dashboard(prom: PrometheusServer) -> int:
    assert [d.name for d in DASHBOARDS] == ["llm-usage-genai.json", "llm-usage.json"]
    verified = 0
    for dashboard in DASHBOARDS:
        queries = dashboard_queries(json.loads(dashboard.read_text()))
        assert queries, f"no queries found in {dashboard}"
        empty = [f"{where}: {expr} -> []" for where, expr in queries if not prom.query(expr)]
        assert not empty, f"{dashboard.name} queries without data:\n" + "\n".join(empty)
        verified += len(queries)
    return verified


GENAI_TOKEN_FIELDS = {
    "input": lambda e: e.get("input_tokens", 0),
    "output": lambda e: e.get("output_tokens", 0),
    "cache_read": cache_read_tokens,
    "cache_write": lambda e: e.get("cache_write_tokens", 0),
    "system": lambda e: e.get("system_tokens", 0),
}


def _genai_totals(prom: PrometheusServer, events: list[dict[str, Any]]) -> str:
    """Tokens by (provider, model, token type), requests and errors by (provider, model): the
    produced values, computed here from the events, not by the tracker."""
    tokens: dict[tuple[str, ...], float] = {}
    requests: dict[tuple[str, ...], float] = {}
    errors: dict[tuple[str, ...], float] = {}
    for e in events:
        key = (e["provider"], e["model"])
        requests[key] = requests.get(key, 0) + 1
        if e["status"] == "error":
            errors[key] = errors.get(key, 0) + 1
        for token_type, value_of in GENAI_TOKEN_FIELDS.items():
            if (value := value_of(e)) > 0:
                tokens[(*key, token_type)] = tokens.get((*key, token_type), 0) + value

    def by(expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        query = f"sum by ({', '.join(labels)}) ({expr})"
        return {
            tuple(s["metric"][label] for label in labels): float(s["value"][1])
            for s in prom.query(query)
        }

    model = ("gen_ai_provider_name", "gen_ai_response_model")
    got = (
        by(f'gen_ai_client_token_usage_sum{{job="{JOB}"}}', *model, "gen_ai_token_type"),
        by(f'gen_ai_client_operation_duration_seconds_count{{job="{JOB}"}}', *model),
        by(f'gen_ai_client_operation_duration_seconds_count{{job="{JOB}",error_type!=""}}', *model),
    )
    want = (tokens, requests, errors)
    return "" if got == want else f"(tokens, requests, errors): got {got}, want {want}"


# --- the helpers themselves, without a broker ------------------------------------------------


def test_vector_selectors_of_rule_expressions() -> None:
    expr = (
        'sum by (job, reason) (rate(a_total{job="x", reason!~"b|c"}[5m])) / on (job) group_left '
        "sum by (job) (rate(b_total[5m] offset 1h)) > 0.01 unless on(job) c:rec == 1 "
        'or absent(up{job="x"}) and histogram_quantile(0.5, d_bucket) > bool 2e3'
    )
    assert vector_selectors(expr) == [
        'a_total{job="x",reason!~"b|c"}',
        "b_total",
        "c:rec",
        'up{job="x"}',
        "d_bucket",
    ]
    assert _matched_labels('a_total{job="x",reason!~"b|c"}') == {"job", "reason"}


def test_dashboard_queries_walk_rows_and_substitute_variables() -> None:
    dashboard = {
        "panels": [
            {"type": "stat", "targets": [{"refId": "A", "expr": 'sum(x{a=~"$provider"})'}]},
            {
                "type": "row",
                "panels": [
                    {
                        "title": "inner",
                        "targets": [
                            {"refId": "B", "expr": 'rate(y{b=~"${model}"}[$__rate_interval])'},
                            {"refId": "C", "datasource": "x"},
                        ],
                    }
                ],
            },
        ],
        "templating": {
            "list": [
                {"name": "provider", "type": "query", "query": "label_values(x, a)"},
                {
                    "name": "model",
                    "type": "query",
                    "query": {"query": 'label_values(x{a=~"$provider"}, b)'},
                },
                {"name": "ds", "type": "datasource", "query": "prometheus"},
            ]
        },
    }
    assert dashboard_queries(dashboard) == [
        ("panel None target A", 'sum(x{a=~".*"})'),
        ("panel 'inner' target B", 'rate(y{b=~".*"}[15s])'),
        ("variable $provider", "count by (a) (x)"),
        ("variable $model", 'count by (b) (x{a=~".*"})'),
    ]
    with pytest.raises(AssertionError, match=r"unknown dashboard variable \$nope"):
        dashboard_queries({"panels": [{"targets": [{"expr": 'x{a=~"$nope"}'}]}]})
