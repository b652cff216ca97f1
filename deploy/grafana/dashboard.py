"""The "LLM usage" Grafana dashboard, generated with grafana-foundation-sdk.

    .venv/bin/python deploy/grafana/dashboard.py          # writes dashboards/llm-usage.json
    .venv/bin/python deploy/grafana/dashboard.py --check  # exit 1 when that file is stale

The JSON is checked in (Grafana provisions it from deploy/grafana/dashboards/) and is
deterministic: sorted keys, a fixed uid, panel ids numbered in order, no timestamps.

Query rules, because every worker of the consumer group exports its own share of the usage
counters and a rebalance moves partitions (and so the growth of a label set) from one worker to
another:
- a usage metric (llm_*) is only ever read as `sum [by (...)] (rate(metric{filters}
  [$__rate_interval]))`: the sum across workers is continuous when series move between
  instances, where a per-instance view would show one series stopping and another starting;
- every usage selector carries the four template-variable filters (`=~`, so "All" is `.*`,
  which also matches series without the label);
- the worker's own metrics (usage_consumer_*) may be shown per worker (`by (instance)`):
  partitions, backlogs and backpressure are properties of one worker.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
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
OUTPUT = HERE / "dashboards" / "llm-usage.json"
DASHBOARD_UID = "llm-usage-consumer"
DATASOURCE_UID = "prometheus"  # provisioning/datasources/prometheus.yml gives it this uid
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"

# The usage metrics' filters: one per template variable.
USAGE_FILTERS = (
    'llm_provider=~"$provider", llm_model=~"$model", '
    'llm_scenario=~"$scenario", llm_user_tier=~"$user_tier"'
)
TOKENS_PER_S = "count:tokens/s"  # Grafana custom unit: scaled count (K, M, B) + " tokens/s"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


def usage_rate(metric: str, by: str = "") -> str:
    """`sum [by (...)] (rate(metric{filters}[$__rate_interval]))`: summed across workers."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{USAGE_FILTERS}}}[{RATE}]))"


def usage_quantile(q: float, by: str) -> str:
    buckets = usage_rate("llm_request_duration_milliseconds_bucket", f"le, {by}" if by else "le")
    return f"histogram_quantile({q}, {buckets})"


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


def variables() -> list[DatasourceVariable | QueryVariable]:
    requests = "llm_request_count_total"
    return [
        DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(model.VariableOption(text="Prometheus", value=DATASOURCE_UID)),
        _multi_variable(
            "provider",
            "Provider",
            f"label_values({requests}, llm_provider)",
            "LLM provider (llm_provider).",
        ),
        _multi_variable(
            "model",
            "Model",
            f'label_values({requests}{{llm_provider=~"$provider"}}, llm_model)',
            "Model actually used (llm_model).",
        ),
        _multi_variable(
            "scenario",
            "Scenario",
            f'label_values({requests}{{llm_provider=~"$provider", llm_model=~"$model"}}, '
            "llm_scenario)",
            "API scenario (llm_scenario).",
        ),
        _multi_variable(
            "user_tier",
            "User tier",
            f'label_values({requests}{{llm_provider=~"$provider", llm_model=~"$model", '
            'llm_scenario=~"$scenario"}, llm_user_tier)',
            "User tier (llm_user_tier); All also covers events without a tier.",
        ),
    ]


# --- panels, row by row --------------------------------------------------------------------


def overview_panels() -> list[stat.Panel]:
    return [
        stat_panel(
            "Tokens/s",
            "Input + output tokens per second (llm_token_total), all workers, current filters.",
            TOKENS_PER_S,
            [Query(usage_rate("llm_token_total"))],
        ),
        stat_panel(
            "Requests/s",
            "LLM requests per second (llm_request_count_total), all workers, current filters.",
            "reqps",
            [Query(usage_rate("llm_request_count_total"))],
        ),
        stat_panel(
            "Error ratio",
            "Errored requests / all requests (llm_request_errors_total / llm_request_count_total).",
            "percentunit",
            [
                Query(
                    f"({usage_rate('llm_request_errors_total')} or vector(0))"
                    f" / {usage_rate('llm_request_count_total')}"
                )
            ],
            thresholds=((None, "green"), (0.01, "orange"), (0.05, "red")),
        ),
        stat_panel(
            "p95 latency",
            "95th percentile of llm_request_duration_milliseconds over all models.",
            "ms",
            [Query(usage_quantile(0.95, ""))],
        ),
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


_BY_PROVIDER_MODEL = "llm_provider, llm_model"
_PROVIDER_MODEL_LEGEND = "{{llm_provider}} / {{llm_model}}"
_TOKEN_KINDS = (
    ("input", "Input", "llm_token_usage_input_total", "input/prompt tokens, cache excluded"),
    ("output", "Output", "llm_token_usage_output_total", "output/completion tokens"),
    ("cache", "Cache input", "llm_token_cache_input_total", "cache-related input tokens"),
    ("system", "System", "llm_token_system_total", "tokens of system operations"),
)


def token_panels() -> list[timeseries.Panel | bargauge.Panel]:
    panels: list[timeseries.Panel | bargauge.Panel] = [
        timeseries_panel(
            f"{label} tokens/s by provider and model",
            f"{what.capitalize()} per second ({metric}), summed across workers.",
            TOKENS_PER_S,
            [Query(usage_rate(metric, _BY_PROVIDER_MODEL), _PROVIDER_MODEL_LEGEND)],
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
                    f"sort_desc(topk(10, {usage_rate('llm_token_total', 'llm_model')}))",
                    "{{llm_model}}",
                    instant=True,
                )
            ],
        )
    )
    mix = [
        Query(
            f"label_replace({usage_rate(metric, 'llm_user_tier')}, "
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


def request_panels() -> list[timeseries.Panel]:
    return [
        timeseries_panel(
            "Requests/s by status",
            "LLM requests per second by llm_response_status (llm_request_count_total).",
            "reqps",
            [
                Query(
                    usage_rate("llm_request_count_total", "llm_response_status"),
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
                    usage_rate("llm_request_errors_total", "llm_provider, llm_error_code"),
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
                    usage_rate("llm_request_count_total", _BY_PROVIDER_MODEL),
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
                Query(usage_quantile(q, "llm_model"), f"{{{{llm_model}}}} p{round(q * 100)}")
                for q in (0.5, 0.95, 0.99)
            ],
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


ROWS = (
    ("Overview", overview_panels),
    ("Tokens", token_panels),
    ("Requests and latency", request_panels),
    ("Consumer: throughput, lag and commits", throughput_panels),
    ("Consumer: scrape-ack backlog and backpressure", scrape_ack_panels),
    ("Cardinality", cardinality_panels),
)


def build() -> model.Dashboard:
    builder = (
        Dashboard("LLM usage")
        .uid(DASHBOARD_UID)
        .description(
            "LLM gateway token usage recorded by llm-usage-consumer, and the consumer fleet "
            "itself. Generated by deploy/grafana/dashboard.py: edit that, not this JSON."
        )
        .tags(["llm", "llm-usage-consumer", "generated"])
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
        .variables(variables())  # type: ignore[arg-type]
    )
    for title, panels in ROWS:
        builder = builder.with_row(Row(title))
        for panel in panels():
            builder = builder.with_panel(panel)
    dashboard = builder.build()
    for number, built in enumerate(dashboard.panels or [], start=1):
        built.id_val = number
    return dashboard


def render() -> str:
    return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(build()) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if the checked-in JSON differs from what this generates",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the JSON file")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(
                f"{args.output} is stale or missing: regenerate it with `make dashboard` "
                "(.venv/bin/python deploy/grafana/dashboard.py) and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
