"""The status page as HTML: one status dict (consumer.web.status) in, escaped HTML out.

Server-rendered, no scripts, no outside assets. Every value goes through `_e` (html.escape),
because rejected messages are attacker-controlled text.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

__all__ = ["render_html"]


def _e(value: object) -> str:
    """Every value on the page goes through here: text, numbers, attributes alike."""
    if value is None:
        return "&mdash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return html.escape(str(value), quote=True)


def _table(headers: Iterable[str], rows: Iterable[Iterable[object]], css: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{_e(css)}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(items: Iterable[tuple[str, object]]) -> str:
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"


def _uptime(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d1d1f;background:#fff}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.sub{color:#555;margin:0 0 1em}.ok{color:#1a7f37}.bad{color:#b42318;font-weight:600}
table{border-collapse:collapse;margin:.3em 0}th,td{border:1px solid #ddd;padding:.25em .6em}
th{background:#f4f4f5;text-align:left}td{font-variant-numeric:tabular-nums}
table.num td:not(:first-child){text-align:right}
dl{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;margin:.3em 0}
dt{color:#555}dd{margin:0}code,.value{font-family:ui-monospace,monospace;font-size:.92em}
.value{white-space:pre-wrap;word-break:break-all;background:#f8f8f8;padding:.1em .3em}
"""


def render_html(status: dict[str, Any]) -> str:
    """The page: one `status` dict in, escaped HTML out."""
    worker = status["worker"]
    ready_class = "ok" if worker["ready"] else "bad"
    title = f"usage-consumer {worker['group_id']} / {worker['topic']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">member <code id="member-id">{_e(worker["member_id"] or "(none yet)")}'
        f"</code> &middot; up {_e(_uptime(worker['uptime_seconds']))} since "
        f'{_e(worker["started_at"])} &middot; <span id="readiness" class="{ready_class}">'
        f'{_e(worker["readiness"])}</span> &middot; <a href="metrics">/metrics</a> &middot; '
        '<a href="status">/status (JSON)</a></p>',
        "<h2>Worker</h2>",
        _pairs(
            [
                ("group id", worker["group_id"]),
                ("member id", worker["member_id"]),
                ("client id", worker["client_id"]),
                ("topic", worker["topic"]),
                ("dead-letter topic", worker["dead_letter_topic"]),
                ("commit mode", worker["commit_mode"]),
                ("group protocol", worker["group_protocol"]),
                ("metrics profile", worker["metrics_profile"]),
                ("live", worker["live"]),
                ("ready", worker["ready"]),
                ("scrapes", worker["scrapes"]),
                ("messages consumed", worker["messages_consumed"]),
                ("events recorded", worker["events_recorded"]),
                ("events waiting for a scrape", worker["unscraped_events"]),
                ("oldest waiting (s)", worker["oldest_unscraped_seconds"]),
                ("TLS", worker["web"]["tls"]),
                ("basic auth", worker["web"]["basic_auth"]),
                ("generated at", status["generated_at"]),
            ]
        ),
    ]
    if worker["conditions"]:
        parts.append("<h2>Held back</h2>")
        parts.append(_table(["condition", "why"], sorted(worker["conditions"].items())))
    parts.append(f"<h2>Partitions ({len(status['partitions'])} assigned)</h2>")
    parts.append(
        _table(
            [
                "partition",
                "processed",
                "recorded",
                "scrape-covered",
                "committable",
                "committed",
                "lag",
                "held dead letters",
                "waiting for a scrape",
                "paused",
            ],
            (
                [
                    f"{p['topic']}/{p['partition']}",
                    p["processed"],
                    p["recorded"],
                    p["covered"],
                    p["committable"],
                    p["committed"],
                    p["lag"],
                    p["held_dead_letters"],
                    p["unscraped_events"],
                    p["paused"],
                ]
                for p in status["partitions"]
            ),
            "num partitions",
        )
    )
    if status["paused"]:
        parts.append("<h2>Paused</h2>")
        parts.append(
            _table(
                ["partition", "reason", "why"],
                (
                    [
                        f"{p['topic']}/{p['partition']}",
                        p["reason"],
                        worker["conditions"].get(p["reason"], ""),
                    ]
                    for p in status["paused"]
                ),
            )
        )
    dead = status["dead_letters"]
    parts.append(f"<h2>Dead letters to {_e(dead['topic'])}</h2>")
    parts.append(
        _table(
            ["reason", "rejected", "acknowledged", "failed writes"],
            [
                *(
                    [r["reason"], r["rejected"], r["acknowledged"], r["failed"]]
                    for r in dead["by_reason"]
                ),
                ["total", dead["rejected"], dead["acknowledged"], dead["failed"]],
            ],
            "num dead-letters",
        )
    )
    for reason in dead["by_reason"]:
        parts.append(f"<h3>Last {_e(len(reason['examples']))} {_e(reason['reason'])}</h3>")
        parts.append('<table class="examples"><thead><tr><th>source</th><th>at</th>')
        parts.append("<th>detail</th><th>value (prefix)</th></tr></thead><tbody>")
        for ex in reason["examples"]:
            size = "null" if ex["value_bytes"] < 0 else f"{ex['value_bytes']} bytes"
            parts.append(
                f"<tr><td>{_e(ex['topic'])}/{_e(ex['partition'])}@{_e(ex['offset'])}</td>"
                f"<td>{_e(ex['at'])}</td><td>{_e(ex['detail'])}</td>"
                f'<td><span class="value">{_e(ex["value_prefix"])}</span> '
                f"<small>({_e(size)})</small></td></tr>"
            )
        parts.append("</tbody></table>")
    cardinality = status["cardinality"]
    parts.append(
        f"<h2>Series per usage metric (limit {_e(cardinality['limit'])}, counted "
        f"{_e(round(cardinality['age_seconds']))} s ago)</h2>"
    )
    parts.append(
        _table(
            ["metric", "series", "overflow", "expired"],
            (
                [m["metric"], m["series"], "OVERFLOW" if m["overflow"] else "no", m["expired"]]
                for m in cardinality["metrics"]
            ),
            "num cardinality",
        )
    )
    ttl = cardinality["idle_ttl_seconds"]
    parts.append(
        f"<p>Idle series expire after {_e(f'{ttl:g}')} s without an update "
        f"({_e(cardinality['expired'])} expired so far)</p>"
        if ttl
        else "<p>Idle series never expire (series_idle_ttl is 0)</p>"
    )
    unknown = status["unknown_fields"]
    if unknown:
        parts.append("<h2>Unknown fields (ignored)</h2>")
        parts.append(
            _table(
                ["field", "events", "likely meant"],
                ([u["field"], u["events"], u["known_as"] or ""] for u in unknown),
                "num unknown",
            )
        )
    keys = status["keys"]
    several = keys["on_several_partitions"]
    parts.append(
        f'<p class="{"bad" if several else "ok"}">Message keys: {_e(keys["attribute_sets"])} '
        f"attribute sets seen, {_e(several)} of them on more than one partition"
        + (
            " (producers do not key by attribute set: every worker holds nearly every series; "
            "see docs/producing.md, The message key)"
            if several
            else " (keyed by attribute set, or not enough traffic yet to tell)"
        )
        + "</p>"
    )
    parts.append("<h2>Settings</h2>")
    parts.append(_pairs(status["settings"].items()))
    parts.append("</body></html>")
    return "\n".join(parts)
