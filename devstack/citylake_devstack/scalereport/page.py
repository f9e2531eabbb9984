"""The one-page HTML summary: key figures, findings, per-process table and the
plots embedded as data: URIs, so the file stands alone (no external assets)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from citylake_devstack.scalereport.plots import FIGURES
from citylake_devstack.scalereport.record import RunRecord
from citylake_devstack.scalereport.summary import Summary

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.1em; margin-top: 1.4em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.4em 0; font-size: 0.9em; }
td, th { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 0 2em; }
.finding { color: #a40; }
.ok { color: #060; }
.muted { color: #777; font-size: 0.85em; }
img { max-width: 100%; }
"""


PROTOCOL_COLUMNS = [
    "protocol",
    "planned",
    "online",
    "readings",
    "device events",
    "readings peak/s",
    "mean/s",
    "load planned",
    "load achieved",
]


def number(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _rows(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _box_rows(s: Summary) -> list[list[str]]:
    """The edge box's limits and figures (runs with --edge-box)."""
    box = s.box
    if box is None:
        return []
    return [
        [
            "edge box (cgroup v1) limits",
            f"{box.cpus:g} CPUs, {number(box.memory_limit_mb)} MiB; inside: {', '.join(box.inside)}",
        ],
        [
            "edge box memory peak / mean",
            f"{number(box.memory_peak_mb)} / {number(box.memory_mean_mb)} MiB with page cache "
            f"(rss peak {number(box.rss_peak_mb)}, cache peak {number(box.cache_peak_mb)} MiB)",
        ],
        [
            "edge box CPU mean / peak, throttling",
            f"{number(box.cpu_mean)}% / {number(box.cpu_peak)}% of one core; "
            f"{number(box.throttled_periods_percent, 1)}% of periods throttled, "
            f"{number(box.throttled_s, 1)} s held back",
        ],
        ["edge box OOM kills / failcnt", f"{box.oom_kills} / {box.failcnt}"],
    ]


def render(record: RunRecord, summary: Summary, figures: Mapping[str, Path]) -> str:
    info = record.info
    s = summary
    plan = info.plan
    title = f"citylake scale run: {sum(s.devices_planned.values()):,} devices, {info.duration_s / 60:.1f} min"
    headline = [
        [
            "devices online (end / planned)",
            ", ".join(f"{p} {s.devices_online.get(p, 0):,} / {n:,}" for p, n in s.devices_planned.items()),
        ],
        [
            "readings landed during the load (ingest)",
            f"{number(s.readings_landed_total)} ({number(s.readings_landed_with_warmup)} with the warm-up)",
        ],
        ["readings visible in the lake at the end", number(s.readings_in_lake)],
        [
            "ingest rate, peak / mean",
            f"{number(s.peak_rate.get('total', 0))} / {number(s.mean_rate.get('total', 0))} readings/s",
        ],
        ["lake rate, peak / mean", f"{number(s.lake_peak_rate)} / {number(s.lake_mean_rate)} readings/s"],
        [
            "freshness p50 / p99 / max",
            f"{number(s.freshness_p50_s, 2)} / {number(s.freshness_p99_s, 2)} / "
            f"{number(s.freshness_max_s, 2)} s ({s.markers_visible} of {s.markers} markers)",
        ],
        [
            "query latency p50 / p99",
            f"{number(s.query_p50_ms, 1)} / {number(s.query_p99_ms, 1)} ms "
            f"({s.queries:,} queries, {s.query_rate:.1f}/s of {s.query_rate_planned:g}/s planned, "
            f"{s.query_errors} errors, "
            f"{s.query_not_found} not found)",
        ],
        [
            "pipeline backlog end / peak",
            f"{number(s.final_backlog_rows)} / {number(s.peak_backlog_rows)} rows",
        ],
        [
            "after the load: landed / in the lake",
            (
                f"{number(info.drain.get('landed', 0))} / {number(info.drain.get('in_lake', 0))} readings "
                f"(waited {number(info.drain.get('waited_s', 0), 1)} s)"
                if info.drain
                else "not measured"
            ),
        ],
        ["landing zone at the end", f"{number(s.landing_bytes / 1e6, 1)} MB"],
        [
            "Flink JVMs' RSS, peak / mean (psutil, summed)",
            f"{number(s.flink_jvm_rss_peak_mb)} / {number(s.flink_jvm_rss_mean_mb)} MB",
        ],
        *_box_rows(s),
        ["goals missed, load short", "; ".join(s.missed) or "none"],
        [
            "machine CPU mean / peak",
            f"{number(s.machine_mean_cpu)}% / {number(s.machine_peak_cpu)}% of one core "
            f"({s.cores} cores; other work {number(s.other_mean_cpu)}%, steal {number(s.steal_mean, 1)}%)",
        ],
    ]
    per_protocol = [
        [
            p,
            number(s.devices_planned.get(p, 0)),
            number(s.devices_online.get(p, 0)),
            number(s.readings_landed.get(p, 0)),
            number(s.events_landed.get(p, 0)),
            number(s.peak_rate.get(p, 0)),
            number(s.mean_rate.get(p, 0)),
            f"{number(s.load[p][0])} {s.load[p][2]}" if p in s.load else "",
            f"{number(s.load[p][1])} ({100 * s.load[p][1] / s.load[p][0]:.0f}%)"
            if p in s.load and s.load[p][0]
            else "",
        ]
        for p in sorted(set(s.devices_planned) | set(s.readings_landed))
    ]
    processes = [
        [p.name, number(p.mean_cpu), number(p.peak_cpu), number(p.mean_rss_mb), number(p.peak_rss_mb), p.top]
        for p in s.processes
    ]
    kinds = [
        [kind, number(n), number(p50, 1), number(p99, 1), number(errors)]
        for kind, (n, p50, p99, errors) in s.query_kinds.items()
    ]
    errors = [[name, number(value)] for name, value in sorted(s.errors.items())]
    lake = [[name, number(rows)] for name, rows in sorted(s.lake_tables.items())]
    lags = [[source, number(value, 1)] for source, value in sorted(s.max_event_lag_s.items())]
    if s.findings:
        found = "<ul>" + "".join(f'<li class="finding">{html.escape(f)}</li>' for f in s.findings) + "</ul>"
    else:
        found = '<p class="ok">No saturation found: every component kept up with the load.</p>'
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in info.notes)
    stop = info.stop_check
    left = stop.get("left_running") or []
    stop_line = (
        f'<p class="finding">still running after stop: {html.escape(", ".join(map(str, left)))}</p>'
        if left
        else f'<p class="ok">stopped cleanly: {stop.get("checked", 0)} processes of the run checked, '
        "none left</p>"
        if stop
        else ""
    )
    plan_rows = [[k, str(v)] for k, v in plan.items() if k != "devices"]
    memory_gb = number(float(info.machine.get("mem_total_mb", 0)) / 1024, 1)
    byline = (
        f"started {html.escape(info.started_at)}; load {info.duration_s:.0f} s of {info.planned_s:.0f} s "
        f"planned, warm-up {info.warmup_s:.0f} s, whole run {info.wall_s:.0f} s"
        f"{'; <b>interrupted</b>' if info.interrupted else ''}; machine "
        f"{html.escape(str(info.machine.get('cores', '?')))} cores, {memory_gb} GB; "
        f"work directory {html.escape(info.workdir)}"
    )
    images = "\n".join(
        f"<h2>{html.escape(FIGURES[name][0])}</h2>\n{_image(path, FIGURES[name][0])}"
        for name, path in figures.items()
        if name in FIGURES
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="muted">{byline}</p>
<h2>Key figures</h2>
{_rows(headline)}
<h2>Findings</h2>
{found}
{stop_line}
<div class="grid"><div>
<h2>By protocol</h2>
{_rows(per_protocol, PROTOCOL_COLUMNS)}
<h2>Queries by kind</h2>
{_rows(kinds, ["kind", "count", "p50 ms", "p99 ms", "errors"])}
<h2>Lake rows by table</h2>
{_rows(lake, ["table", "rows"])}
</div><div>
<h2>Errors and drops (counted)</h2>
{_rows(errors, ["counter", "value"])}
<h2>Worst edge lag (oldest reading in a flush)</h2>
{_rows(lags, ["source", "max s"])}
<h2>Plan</h2>
{_rows(plan_rows)}
</div></div>
<h2>Processes (CPU in % of one core)</h2>
{_rows(processes, ["process tree", "mean CPU", "peak CPU", "mean RSS MB", "peak RSS MB", "busiest command"])}
{"<h2>Notes</h2><ul>" + notes + "</ul>" if notes else ""}
{images}
<p class="muted">Data: samples.json (everything), samples.csv (one row per sample).
Rebuild: citylake scale report DIR.</p>
</body></html>
"""
