"""The Grafana dashboards, generated with grafana-foundation-sdk: one per metrics profile.

    .venv/bin/python deploy/grafana/dashboard.py          # writes every file of DASHBOARDS
    .venv/bin/python deploy/grafana/dashboard.py --check  # exit 1 when one of them is stale

    llm     dashboards/llm-usage.json        "LLM usage", the llm.* instruments (llm_*)
    genai   dashboards/llm-usage-genai.json  "LLM usage (GenAI)", the OpenTelemetry GenAI
                                             client metrics (gen_ai_client_*)

The JSON is checked in (Grafana provisions every file of deploy/grafana/dashboards/) and is
deterministic: sorted keys, a fixed uid, panel ids numbered in order, no timestamps. The two
dashboards share their helpers, their template variables (over each profile's labels) and the
worker's rows (usage_consumer_*, the same in both profiles) verbatim.

Query rules, because every worker of the consumer group exports its own share of the usage
series and a rebalance moves partitions (and so the growth of a label set) from one worker to
another:
- a usage metric (llm_*, gen_ai_*) is only ever read as `sum [by (...)] (rate(metric{filters}
  [$__rate_interval]))`: the sum across workers is continuous when series move between
  instances, where a per-instance view would show one series stopping and another starting;
- every usage selector carries the four template-variable filters (`=~`, so "All" is `.*`,
  which also matches series without the label); a genai selector may add a fixed matcher on
  gen_ai_token_type or `error_type!=""` (the failed requests);
- gen_ai_client_token_usage is never summed across token types other than input + output:
  cache_write tokens are already part of input;
- the worker's own metrics (usage_consumer_*) may be shown per worker (`by (instance)`):
  partitions, backlogs and backpressure are properties of one worker.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, stat, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueColorMode,
    BigValueGraphMode,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    LineInterpolation,
    SortOrder,
    StackingMode,
    TooltipDisplayMode,
    VizOrientation,
)

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "dashboards"
DATASOURCE_UID = "prometheus"  # provisioning/datasources/prometheus.yml gives it this uid
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
TOKENS_PER_S = "count:tokens/s"  # Grafana custom unit: scaled count (K, M, B) + " tokens/s"
TOKENS = "count:tokens"

# The template variables filtering the usage metrics, in cascading order, with their titles.
VARIABLES = ("provider", "model", "scenario", "user_tier")
_VARIABLE_TITLES = {
    "provider": "Provider",
    "model": "Model",
    "scenario": "Scenario",
    "user_tier": "User tier",
}


@dataclass(frozen=True)
class Usage:
    """One profile's usage metrics as the dashboard reads them: the label behind each template
    variable, and the metric the variables' values come from (a series per label set)."""

    provider: str
    model: str
    scenario: str
    user_tier: str
    values_from: str

    def label(self, variable: str) -> str:
        label: str = getattr(self, variable)
        return label

    def filters(self, variables: Sequence[str] = VARIABLES) -> str:
        """The selector's matchers, one per template variable."""
        return ", ".join(f'{self.label(v)}=~"${v}"' for v in variables)

    def rate(self, metric: str, by: str = "", match: str = "") -> str:
        """`sum [by (...)] (rate(metric{filters[, match]}[$__rate_interval]))`: summed across
        workers; `match` adds fixed matchers after the variables' filters."""
        grouping = f" by ({by})" if by else ""
        matchers = f"{self.filters()}, {match}" if match else self.filters()
        return f"sum{grouping} (rate({metric}{{{matchers}}}[{RATE}]))"

    def quantile(self, q: float, bucket: str, by: str = "", match: str = "") -> str:
        """`histogram_quantile(q, sum by (le[, by]) (rate(bucket{...}[...])))`."""
        return f"histogram_quantile({q}, {self.rate(bucket, f'le, {by}' if by else 'le', match)})"


LLM = Usage(
    provider="llm_provider",
    model="llm_model",
    scenario="llm_scenario",
    user_tier="llm_user_tier",
    values_from="llm_request_count_total",
)
GENAI = Usage(
    provider="gen_ai_provider_name",
    model="gen_ai_response_model",
    scenario="tingly_scenario",
    user_tier="tingly_user_tier",
    values_from="gen_ai_client_operation_duration_seconds_count",  # one value per request
)


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


def or_zero(expr: str, label: str) -> str:
    """A labelled worker metric has no series until it first counts: show a 0 labelled
    `label="(none)"` then, not "No data"."""
    return f'({expr}) or on() label_replace(vector(0), "{label}", "(none)", "", "")'


def _targets(queries: Sequence[Query]) -> list[Dataquery]:
    out = []
    for i, q in enumerate(queries):
        target = Dataquery().expr(q.expr).ref_id(chr(ord("A") + i)).datasource(DATASOURCE)
        if q.legend:
            target = target.legend_format(q.legend)
        out.append(target.instant() if q.instant else target.range())
    return out


def _thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


GREEN_ONLY = ((None, "green"),)
ERROR_RATIO_STEPS = ((None, "green"), (0.01, "orange"), (0.05, "red"))


def timeseries_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    span: int = 12,
    height: int = 8,
    stack: bool = False,
    steps: bool = False,
    thresholds: Sequence[tuple[float | None, str]] = (),
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(span)
        .height(height)
        .targets(_targets(queries))  # type: ignore[arg-type]
        .fill_opacity(20 if stack else 10)
        .axis_soft_min(0)
        .stacking(StackingConfig().mode(StackingMode.NORMAL if stack else StackingMode.NONE))
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
            .sort_by("Mean")
            .sort_desc(True)
        )
        .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    if steps:
        panel = panel.line_interpolation(LineInterpolation.STEP_AFTER)
    if thresholds:
        panel = panel.thresholds(_thresholds(*thresholds)).thresholds_style(
            GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)
        )
    return panel


def stat_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    span: int = 4,
    height: int = 4,
    thresholds: Sequence[tuple[float | None, str]] = GREEN_ONLY,
    mappings: Sequence[model.ValueMap] = (),
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(span)
        .height(height)
        .targets(_targets(queries))  # type: ignore[arg-type]
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(BigValueGraphMode.AREA)
        .color_mode(BigValueColorMode.VALUE)
        .thresholds(_thresholds(*thresholds))
    )
    if mappings:
        panel = panel.mappings(list(mappings))
    return panel


def bargauge_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    span: int = 12,
    height: int = 8,
    thresholds: Sequence[tuple[float | None, str]] = GREEN_ONLY,
    max_value: float | None = None,
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(span)
        .height(height)
        .targets(_targets(queries))  # type: ignore[arg-type]
        .orientation(VizOrientation.HORIZONTAL)
        .display_mode(BarGaugeDisplayMode.GRADIENT)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(_thresholds(*thresholds))
        .min(0)
    )
    if max_value is not None:
        panel = panel.max(max_value)
    return panel


def _multi_variable(name: str, label: str, query: str, description: str) -> QueryVariable:
    return (
        QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")  # not the list of values: ".*" also matches series without the label
        .current(model.VariableOption(text=["All"], value=["$__all"]))
    )


_VARIABLE_DESCRIPTIONS = {
    "provider": "LLM provider ({label}).",
    "model": "Model actually used ({label}).",
    "scenario": "API scenario ({label}).",
    "user_tier": "User tier ({label}); All also covers events without a tier.",
}


def variables(usage: Usage) -> list[DatasourceVariable | QueryVariable]:
    """The data source, then one multi-value variable per usage label, each filtered by the
    ones before it."""
    out: list[DatasourceVariable | QueryVariable] = [
        DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(model.VariableOption(text="Prometheus", value=DATASOURCE_UID)),
    ]
    for i, name in enumerate(VARIABLES):
        earlier = usage.filters(VARIABLES[:i])
        selector = f"{usage.values_from}{{{earlier}}}" if earlier else usage.values_from
        label = usage.label(name)
        out.append(
            _multi_variable(
                name,
                _VARIABLE_TITLES[name],
                f"label_values({selector}, {label})",
                _VARIABLE_DESCRIPTIONS[name].format(label=label),
            )
        )
    return out


# --- panels, row by row --------------------------------------------------------------------


# --- the llm profile's usage rows ------------------------------------------------------------


def llm_overview_panels() -> list[stat.Panel]:
    return [
        stat_panel(
            "Tokens/s",
            "Input + output tokens per second (llm_token_total), all workers, current filters.",
            TOKENS_PER_S,
            [Query(LLM.rate("llm_token_total"))],
        ),
        stat_panel(
            "Requests/s",
            "LLM requests per second (llm_request_count_total), all workers, current filters.",
            "reqps",
            [Query(LLM.rate("llm_request_count_total"))],
        ),
        stat_panel(
            "Error ratio",
            "Errored requests / all requests (llm_request_errors_total / llm_request_count_total).",
            "percentunit",
            [
                Query(
                    f"({LLM.rate('llm_request_errors_total')} or vector(0))"
                    f" / {LLM.rate('llm_request_count_total')}"
                )
            ],
            thresholds=ERROR_RATIO_STEPS,
        ),
        stat_panel(
            "p95 latency",
            "95th percentile of llm_request_duration_milliseconds over all models.",
            "ms",
            [Query(LLM.quantile(0.95, "llm_request_duration_milliseconds_bucket"))],
        ),
    ]


_BY_PROVIDER_MODEL = "llm_provider, llm_model"
_PROVIDER_MODEL_LEGEND = "{{llm_provider}} / {{llm_model}}"
_TOKEN_KINDS = (
    ("input", "Input", "llm_token_usage_input_total", "input/prompt tokens, cache excluded"),
    ("output", "Output", "llm_token_usage_output_total", "output/completion tokens"),
    ("cache", "Cache input", "llm_token_cache_input_total", "cache-related input tokens"),
    ("system", "System", "llm_token_system_total", "tokens of system operations"),
)


def llm_token_panels() -> list[timeseries.Panel | bargauge.Panel]:
    panels: list[timeseries.Panel | bargauge.Panel] = [
        timeseries_panel(
            f"{label} tokens/s by provider and model",
            f"{what.capitalize()} per second ({metric}), summed across workers.",
            TOKENS_PER_S,
            [Query(LLM.rate(metric, _BY_PROVIDER_MODEL), _PROVIDER_MODEL_LEGEND)],
            stack=True,
        )
        for _, label, metric, what in _TOKEN_KINDS
    ]
    panels.append(
        bargauge_panel(
            "Top models by tokens/s",
            "The 10 models with the most input + output tokens per second (llm_token_total) "
            "at the end of the time range.",
            TOKENS_PER_S,
            [
                Query(
                    f"sort_desc(topk(10, {LLM.rate('llm_token_total', 'llm_model')}))",
                    "{{llm_model}}",
                    instant=True,
                )
            ],
        )
    )
    mix = [
        Query(
            f"label_replace({LLM.rate(metric, 'llm_user_tier')}, "
            '"llm_user_tier", "(none)", "llm_user_tier", "")',
            f"{{{{llm_user_tier}}}} {kind}",
        )
        for kind, _, metric, _ in _TOKEN_KINDS
    ]
    panels.append(
        timeseries_panel(
            "Token mix per user tier",
            "Tokens per second of each kind (input, output, cache, system) per user tier; "
            "(none) is events without a tier.",
            TOKENS_PER_S,
            mix,
            stack=True,
        )
    )
    return panels


def llm_request_panels() -> list[timeseries.Panel]:
    return [
        timeseries_panel(
            "Requests/s by status",
            "LLM requests per second by llm_response_status (llm_request_count_total).",
            "reqps",
            [
                Query(
                    LLM.rate("llm_request_count_total", "llm_response_status"),
                    "{{llm_response_status}}",
                )
            ],
            stack=True,
        ),
        timeseries_panel(
            "Errors/s by error code",
            "Errored requests per second by llm_error_code (llm_request_errors_total).",
            "reqps",
            [
                Query(
                    LLM.rate("llm_request_errors_total", "llm_provider, llm_error_code"),
                    "{{llm_provider}} / {{llm_error_code}}",
                )
            ],
            stack=True,
        ),
        timeseries_panel(
            "Requests/s by provider and model",
            "LLM requests per second by provider and model (llm_request_count_total).",
            "reqps",
            [
                Query(
                    LLM.rate("llm_request_count_total", _BY_PROVIDER_MODEL),
                    _PROVIDER_MODEL_LEGEND,
                )
            ],
            stack=True,
        ),
        timeseries_panel(
            "Latency p50/p95/p99 by model",
            "Quantiles of llm_request_duration_milliseconds per model, from the histogram "
            "buckets summed across workers (buckets from 50 ms to 10 min).",
            "ms",
            [
                Query(
                    LLM.quantile(q, "llm_request_duration_milliseconds_bucket", "llm_model"),
                    f"{{{{llm_model}}}} p{round(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
        ),
    ]


# --- the genai profile's usage rows ----------------------------------------------------------

_GENAI_TOKENS = "gen_ai_client_token_usage_sum"  # _sum: the tokens; one observation per type
_GENAI_TOKEN_BUCKETS = "gen_ai_client_token_usage_bucket"  # noqa: S105 (a metric name)
_GENAI_REQUESTS = "gen_ai_client_operation_duration_seconds_count"  # _count: the requests
_GENAI_DURATION_BUCKETS = "gen_ai_client_operation_duration_seconds_bucket"
# Failed requests: the duration series with error_type (canceled requests never carry one).
_GENAI_ERRORS = 'error_type!=""'
# Input + output, as llm_token_total: cache_write is already part of input, never add it.
_GENAI_IN_OUT = 'gen_ai_token_type=~"input|output"'
_GENAI_BY_PROVIDER_MODEL = "gen_ai_provider_name, gen_ai_response_model"
_GENAI_PROVIDER_MODEL_LEGEND = "{{gen_ai_provider_name}} / {{gen_ai_response_model}}"
_GENAI_TOKEN_TYPES = (
    ("input", "Input", "input/prompt tokens (cache reads excluded, cache writes included)"),
    ("output", "Output", "output/completion tokens"),
    ("cache_read", "Cache read", "input tokens served from the prompt cache"),
    ("cache_write", "Cache write", "input tokens written to the prompt cache (part of input)"),
    ("system", "System", "tokens of system operations"),
)
_NOT_STACKED = "Not stacked: cache_write tokens are already part of input."
_GENAI_LATENCY_ALERT_S = 60  # genai-alerts.yml: UsageConsumerGenAILatencyHigh, p99 > 60 s
_GENAI_ERROR_ALERT_RATIO = 0.05  # genai-alerts.yml: UsageConsumerGenAIErrorRatioHigh


def genai_overview_panels() -> list[stat.Panel]:
    return [
        stat_panel(
            "Tokens/s",
            "Input + output tokens per second (gen_ai_client_token_usage_sum, gen_ai_token_type "
            "input or output; cache_write is part of input), all workers, current filters.",
            TOKENS_PER_S,
            [Query(GENAI.rate(_GENAI_TOKENS, match=_GENAI_IN_OUT))],
        ),
        stat_panel(
            "Requests/s",
            "LLM requests per second (gen_ai_client_operation_duration_seconds_count: one "
            "observation per request), all workers, current filters.",
            "reqps",
            [Query(GENAI.rate(_GENAI_REQUESTS))],
        ),
        stat_panel(
            "Error ratio",
            "Failed requests (the duration series with error_type) / all requests. Canceled "
            "requests carry no error_type: they never count as errors.",
            "percentunit",
            [
                Query(
                    f"({GENAI.rate(_GENAI_REQUESTS, match=_GENAI_ERRORS)} or vector(0))"
                    f" / {GENAI.rate(_GENAI_REQUESTS)}"
                )
            ],
            thresholds=ERROR_RATIO_STEPS,
        ),
        stat_panel(
            "p95 latency",
            "95th percentile of gen_ai_client_operation_duration_seconds over all models, "
            "failed requests included.",
            "s",
            [Query(GENAI.quantile(0.95, _GENAI_DURATION_BUCKETS))],
        ),
    ]


def genai_token_panels() -> list[timeseries.Panel | bargauge.Panel]:
    panels: list[timeseries.Panel | bargauge.Panel] = [
        timeseries_panel(
            "Tokens/s by token type",
            "Tokens per second per gen_ai_token_type (gen_ai_client_token_usage_sum), summed "
            f"across workers. {_NOT_STACKED}",
            TOKENS_PER_S,
            [Query(GENAI.rate(_GENAI_TOKENS, "gen_ai_token_type"), "{{gen_ai_token_type}}")],
        ),
        bargauge_panel(
            "Top models by tokens/s",
            "The 10 models with the most input + output tokens per second "
            "(gen_ai_client_token_usage_sum) at the end of the time range.",
            TOKENS_PER_S,
            [
                Query(
                    "sort_desc(topk(10, "
                    f"{GENAI.rate(_GENAI_TOKENS, 'gen_ai_response_model', _GENAI_IN_OUT)}))",
                    "{{gen_ai_response_model}}",
                    instant=True,
                )
            ],
        ),
    ]
    panels.extend(
        timeseries_panel(
            f"{label} tokens/s by provider and model",
            f"{what.capitalize()} per second (gen_ai_client_token_usage_sum, "
            f'gen_ai_token_type="{token_type}"), summed across workers.',
            TOKENS_PER_S,
            [
                Query(
                    GENAI.rate(
                        _GENAI_TOKENS, _GENAI_BY_PROVIDER_MODEL, f'gen_ai_token_type="{token_type}"'
                    ),
                    _GENAI_PROVIDER_MODEL_LEGEND,
                )
            ],
            stack=True,
        )
        for token_type, label, what in _GENAI_TOKEN_TYPES
    )
    panels.append(
        timeseries_panel(
            "Token mix per user tier",
            "Tokens per second of each gen_ai_token_type per user tier (tingly_user_tier); "
            f"(none) is events without a tier. {_NOT_STACKED}",
            TOKENS_PER_S,
            [
                Query(
                    "label_replace("
                    f"{GENAI.rate(_GENAI_TOKENS, 'tingly_user_tier, gen_ai_token_type')}, "
                    '"tingly_user_tier", "(none)", "tingly_user_tier", "")',
                    "{{tingly_user_tier}} {{gen_ai_token_type}}",
                )
            ],
        )
    )
    panels.append(
        timeseries_panel(
            "Tokens per request p50/p95 by token type",
            "Quantiles of gen_ai_client_token_usage per gen_ai_token_type, over the requests "
            "that used that type (a type is only observed when its count is > 0). Buckets grow "
            "by powers of 4 (1 to 4,194,304), so the quantiles are coarse.",
            TOKENS,
            [
                Query(
                    GENAI.quantile(q, _GENAI_TOKEN_BUCKETS, "gen_ai_token_type"),
                    f"{{{{gen_ai_token_type}}}} p{round(q * 100)}",
                )
                for q in (0.5, 0.95)
            ],
            span=24,
        )
    )
    return panels


def genai_request_panels() -> list[timeseries.Panel]:
    return [
        timeseries_panel(
            "Requests/s by provider and model",
            "LLM requests per second by provider and model "
            "(gen_ai_client_operation_duration_seconds_count).",
            "reqps",
            [
                Query(
                    GENAI.rate(_GENAI_REQUESTS, _GENAI_BY_PROVIDER_MODEL),
                    _GENAI_PROVIDER_MODEL_LEGEND,
                )
            ],
            stack=True,
        ),
        timeseries_panel(
            "Errors/s by error type",
            "Failed requests per second by provider and error_type (the error code, or _OTHER; "
            "gen_ai_client_operation_duration_seconds_count). Canceled requests are not errors.",
            "reqps",
            [
                Query(
                    GENAI.rate(_GENAI_REQUESTS, "gen_ai_provider_name, error_type", _GENAI_ERRORS),
                    "{{gen_ai_provider_name}} / {{error_type}}",
                )
            ],
            stack=True,
        ),
        timeseries_panel(
            "Error ratio by provider and model",
            "Failed requests / all requests per provider and model; 0 for a model without "
            "errors. The dashed line is UsageConsumerGenAIErrorRatioHigh's threshold (5%, for "
            "models with more than 0.1 requests/s).",
            "percentunit",
            [
                Query(
                    f"({GENAI.rate(_GENAI_REQUESTS, _GENAI_BY_PROVIDER_MODEL, _GENAI_ERRORS)}"
                    f" or {GENAI.rate(_GENAI_REQUESTS, _GENAI_BY_PROVIDER_MODEL)} * 0)"
                    f" / {GENAI.rate(_GENAI_REQUESTS, _GENAI_BY_PROVIDER_MODEL)}",
                    _GENAI_PROVIDER_MODEL_LEGEND,
                )
            ],
            thresholds=((None, "green"), (_GENAI_ERROR_ALERT_RATIO, "red")),
        ),
        timeseries_panel(
            "Latency p50/p95/p99 by provider and model",
            "Quantiles of gen_ai_client_operation_duration_seconds per provider and model, from "
            "the histogram buckets summed across workers (0.01 s to 81.92 s, doubling), failed "
            "requests included. The dashed line is UsageConsumerGenAILatencyHigh's p99 "
            "threshold (60 s).",
            "s",
            [
                Query(
                    GENAI.quantile(q, _GENAI_DURATION_BUCKETS, _GENAI_BY_PROVIDER_MODEL),
                    f"{_GENAI_PROVIDER_MODEL_LEGEND} p{round(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            thresholds=((None, "green"), (_GENAI_LATENCY_ALERT_S, "red")),
        ),
    ]


# --- the worker's rows, the same on both dashboards --------------------------------------------


def worker_overview_panels() -> list[stat.Panel]:
    return [
        stat_panel(
            "Consumer lag",
            "Messages behind the end of the topic, summed over partitions "
            "(usage_consumer_consumer_lag; max per partition while a hand-over reports it "
            "twice).",
            "short",
            [Query("sum(max by (topic, partition) (usage_consumer_consumer_lag))")],
            thresholds=((None, "green"), (10_000, "orange"), (100_000, "red")),
        ),
        stat_panel(
            "Workers",
            "Worker processes Prometheus currently scrapes (series of "
            "usage_consumer_assigned_partitions).",
            "short",
            [Query("count(usage_consumer_assigned_partitions)")],
        ),
    ]


def throughput_panels() -> list[timeseries.Panel]:
    return [
        timeseries_panel(
            "Messages consumed and events recorded/s",
            "Kafka messages read and valid events recorded into the meters, per second, "
            "all workers.",
            "mps",
            [
                Query(f"sum(rate(usage_consumer_messages_consumed_total[{RATE}]))", "consumed"),
                Query(f"sum(rate(usage_consumer_events_recorded_total[{RATE}]))", "recorded"),
            ],
        ),
        timeseries_panel(
            "Messages consumed/s per worker",
            "Kafka messages read per second by each worker: a rebalance shows as load moving "
            "between workers.",
            "mps",
            [
                Query(
                    f"sum by (instance) (rate(usage_consumer_messages_consumed_total[{RATE}]))",
                    "{{instance}}",
                )
            ],
            stack=True,
        ),
        timeseries_panel(
            "Consumer lag by partition",
            "Messages between each partition's end and its owner's position "
            "(usage_consumer_consumer_lag, from librdkafka statistics).",
            "short",
            [
                Query(
                    "max by (topic, partition) (usage_consumer_consumer_lag)",
                    "{{topic}} [{{partition}}]",
                )
            ],
        ),
        timeseries_panel(
            "Assigned partitions per worker",
            "Partitions each worker owns (usage_consumer_assigned_partitions); the stack is "
            "the topic's partition count.",
            "short",
            [Query("sum by (instance) (usage_consumer_assigned_partitions)", "{{instance}}")],
            stack=True,
            steps=True,
        ),
        timeseries_panel(
            "DLQ rate by reason",
            "Rejected messages the dead-letter topic acknowledged, by reason "
            "(usage_consumer_dead_letters_total), and failed dead-letter writes (retried; the "
            "partition waits meanwhile).",
            "mps",
            [
                Query(
                    or_zero(
                        f"sum by (reason) (rate(usage_consumer_dead_letters_total[{RATE}]))",
                        "reason",
                    ),
                    "{{reason}}",
                ),
                Query(
                    f"sum(rate(usage_consumer_dead_letter_failures_total[{RATE}]))",
                    "write failures",
                ),
            ],
        ),
        timeseries_panel(
            "Rejected messages/s by reason",
            "Invalid messages by reason code (usage_consumer_messages_rejected_total).",
            "mps",
            [
                Query(
                    or_zero(
                        f"sum by (reason) (rate(usage_consumer_messages_rejected_total[{RATE}]))",
                        "reason",
                    ),
                    "{{reason}}",
                )
            ],
            stack=True,
        ),
        timeseries_panel(
            "Commits/s",
            "Successful and failed offset commits per second, all workers.",
            "ops",
            [
                Query(f"sum(rate(usage_consumer_commits_total[{RATE}]))", "commits"),
                Query(f"sum(rate(usage_consumer_commit_failures_total[{RATE}]))", "failures"),
            ],
        ),
        timeseries_panel(
            "Batch size p50/p95",
            "Messages per batch (usage_consumer_batch_size), all workers.",
            "short",
            [
                Query(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(usage_consumer_batch_size_bucket[{RATE}])))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.95)
            ],
        ),
    ]


def scrape_ack_panels() -> list[timeseries.Panel]:
    return [
        timeseries_panel(
            "Scrape-ack backlog: unscraped events per worker",
            "Scrape-ack backlog: recorded events no completed scrape has covered yet "
            "(usage_consumer_unscraped_events). Replayed after a crash; reading pauses past "
            "max_unscraped_events.",
            "short",
            [Query("sum by (instance) (usage_consumer_unscraped_events)", "{{instance}}")],
        ),
        timeseries_panel(
            "Scrape-ack backlog: oldest unscraped event age",
            "Age of the oldest recorded event no completed scrape has covered "
            "(usage_consumer_oldest_unscraped_age_seconds); reading pauses past "
            "max_unscraped_age_ms (default 5 min, the dashed line).",
            "s",
            [
                Query(
                    "max by (instance) (usage_consumer_oldest_unscraped_age_seconds)",
                    "{{instance}}",
                )
            ],
            thresholds=((None, "green"), (300, "red")),
        ),
        timeseries_panel(
            "Backpressure per worker",
            "On while a worker paused reading because too many recorded events wait for a "
            "scrape (usage_consumer_backpressure).",
            "bool_on_off",
            [Query("max by (instance) (usage_consumer_backpressure)", "{{instance}}")],
            steps=True,
        ),
        timeseries_panel(
            "Scrapes/s per worker",
            "Completed /metrics responses per second (usage_consumer_scrapes_total); each may "
            "let offsets advance. A worker nobody scrapes commits nothing.",
            "reqps",
            [
                Query(
                    f"sum by (instance) (rate(usage_consumer_scrapes_total[{RATE}]))",
                    "{{instance}}",
                )
            ],
        ),
        timeseries_panel(
            "Partition pauses/s by reason",
            "Times partitions were paused per second, by reason (backpressure, dead_letter; "
            "usage_consumer_pauses_total).",
            "ops",
            [
                Query(
                    or_zero(
                        f"sum by (reason) (rate(usage_consumer_pauses_total[{RATE}]))", "reason"
                    ),
                    "{{reason}}",
                )
            ],
        ),
        timeseries_panel(
            "Paused partitions by reason",
            "Partitions paused right now, by reason (usage_consumer_partition_paused).",
            "short",
            [
                Query(
                    or_zero("sum by (reason) (usage_consumer_partition_paused)", "reason"),
                    "{{reason}}",
                )
            ],
            steps=True,
        ),
        timeseries_panel(
            "Partition revocations/s by outcome",
            "Revoked partitions per second by outcome (usage_consumer_revocations_total): "
            "covered is a clean hand-over; timeout, commit_failed and lost mean the next owner "
            "replays.",
            "ops",
            [
                Query(
                    or_zero(
                        f"sum by (outcome) (rate(usage_consumer_revocations_total[{RATE}]))",
                        "outcome",
                    ),
                    "{{outcome}}",
                )
            ],
            span=24,
        ),
    ]


_OVERFLOW_MAPPING = model.ValueMap(
    options={
        "0": model.ValueMappingResult(text="ok", color="green", index=0),
        "1": model.ValueMappingResult(text="OVERFLOW", color="red", index=1),
    }
)


def cardinality_panels() -> list[stat.Panel | timeseries.Panel | bargauge.Panel]:
    return [
        stat_panel(
            "Cardinality overflow",
            "Per usage metric: OVERFLOW once a worker reached the cardinality limit and folds "
            'new label sets into its otel_metric_overflow="true" series (totals stay exact, '
            "label detail is lost; usage_consumer_cardinality_overflow).",
            "none",
            [Query("max by (metric) (usage_consumer_cardinality_overflow)", "{{metric}}")],
            span=8,
            height=8,
            thresholds=((None, "green"), (1, "red")),
            mappings=[_OVERFLOW_MAPPING],
        ),
        timeseries_panel(
            "Series per usage metric vs limit",
            "Series each usage metric exports on the fullest worker "
            "(usage_consumer_metric_series) against usage_consumer_cardinality_limit.",
            "short",
            [
                Query("max by (metric) (usage_consumer_metric_series)", "{{metric}}"),
                Query("max(usage_consumer_cardinality_limit)", "limit"),
            ],
            span=8,
        ),
        bargauge_panel(
            "Cardinality used",
            "usage_consumer_metric_series / usage_consumer_cardinality_limit per usage metric, "
            "on the fullest worker.",
            "percentunit",
            [
                Query(
                    "max by (metric) (usage_consumer_metric_series"
                    " / ignoring(metric) group_left() usage_consumer_cardinality_limit)",
                    "{{metric}}",
                    instant=True,
                )
            ],
            span=8,
            thresholds=((None, "green"), (0.8, "orange"), (1, "red")),
            max_value=1,
        ),
    ]


Panels = Callable[[], Sequence[stat.Panel | timeseries.Panel | bargauge.Panel]]
# The worker's rows: usage_consumer_* is the same whichever profile the worker runs.
WORKER_ROWS: tuple[tuple[str, Panels], ...] = (
    ("Consumer: throughput, lag and commits", throughput_panels),
    ("Consumer: scrape-ack backlog and backpressure", scrape_ack_panels),
    ("Cardinality", cardinality_panels),
)


@dataclass(frozen=True)
class Spec:
    """One dashboard: a metrics profile's usage rows, then the worker's rows."""

    profile: str
    """The metrics_profile whose metrics it reads (`both` serves both dashboards)."""
    file_name: str
    uid: str
    title: str
    description: str
    tags: tuple[str, ...]
    usage: Usage
    overview: Callable[[], Sequence[stat.Panel]]
    """The usage stats; the Overview row ends with the worker's."""
    usage_rows: tuple[tuple[str, Panels], ...]

    @property
    def output(self) -> Path:
        return DASHBOARDS_DIR / self.file_name

    def rows(self) -> tuple[tuple[str, Panels], ...]:
        def overview() -> list[stat.Panel]:
            return [*self.overview(), *worker_overview_panels()]

        return (("Overview", overview), *self.usage_rows, *WORKER_ROWS)


_GENERATED = "Generated by deploy/grafana/dashboard.py: edit that, not this JSON."
DASHBOARDS: dict[str, Spec] = {
    spec.profile: spec
    for spec in (
        Spec(
            profile="llm",
            file_name="llm-usage.json",
            uid="llm-usage-consumer",
            title="LLM usage",
            description="LLM gateway token usage recorded by llm-usage-consumer, and the "
            f"consumer fleet itself. {_GENERATED}",
            tags=("llm", "llm-usage-consumer", "generated"),
            usage=LLM,
            overview=llm_overview_panels,
            usage_rows=(
                ("Tokens", llm_token_panels),
                ("Requests and latency", llm_request_panels),
            ),
        ),
        Spec(
            profile="genai",
            file_name="llm-usage-genai.json",
            uid="llm-usage-consumer-genai",
            title="LLM usage (GenAI)",
            description="LLM gateway token usage recorded by llm-usage-consumer's genai metrics "
            "profile (the OpenTelemetry GenAI client metrics, gen_ai_client_*), and the "
            f"consumer fleet itself. {_GENERATED}",
            tags=("llm", "gen-ai", "llm-usage-consumer", "generated"),
            usage=GENAI,
            overview=genai_overview_panels,
            usage_rows=(
                ("Tokens", genai_token_panels),
                ("Requests and latency", genai_request_panels),
            ),
        ),
    )
}


def outputs() -> dict[str, Path]:
    """{profile: the JSON file of its dashboard}, every dashboard this script writes."""
    return {profile: spec.output for profile, spec in DASHBOARDS.items()}


def build(profile: str = "llm") -> model.Dashboard:
    spec = DASHBOARDS[profile]
    builder = (
        Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(list(spec.tags))
        .timezone("browser")
        .time("now-1h", "now")
        .refresh("30s")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .editable()
        .annotation(
            AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        .variables(variables(spec.usage))  # type: ignore[arg-type]
    )
    for title, panels in spec.rows():
        builder = builder.with_row(Row(title))
        for panel in panels():
            builder = builder.with_panel(panel)
    dashboard = builder.build()
    for number, built in enumerate(dashboard.panels or [], start=1):
        built.id_val = number
    return dashboard


def render(profile: str = "llm") -> str:
    return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(build(profile)) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a checked-in JSON differs from what this generates",
    )
    parser.add_argument(
        "--profile",
        action="append",
        choices=list(DASHBOARDS),
        help="only this profile's dashboard (repeatable; default: all of them)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DASHBOARDS_DIR,
        help="the directory of the JSON files (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    stale = 0
    for profile in args.profile or list(DASHBOARDS):
        output: Path = args.output_dir / DASHBOARDS[profile].file_name
        text = render(profile)
        if args.check:
            current = output.read_text(encoding="utf-8") if output.exists() else None
            if current != text:
                print(
                    f"{output} is stale or missing: regenerate it with `make dashboard` "
                    "(.venv/bin/python deploy/grafana/dashboard.py) and commit the result",
                    file=sys.stderr,
                )
                stale += 1
            else:
                print(f"{output} is up to date")
            continue
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
