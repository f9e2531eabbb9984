"""A report directory from a ``RunRecord``:

samples.json    the record itself (everything measured; rebuilds the rest)
samples.csv     one row per sample, derived rates and percentiles included
<figure>.png    ingest_rate, lag, freshness, query_latency, cpu, memory, devices_online;
                edge_box with --edge-box
index.html      the one-page summary with the figures embedded
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from citylake_devstack.scalereport.page import render
from citylake_devstack.scalereport.plots import write_figures
from citylake_devstack.scalereport.record import RunRecord
from citylake_devstack.scalereport.summary import (
    Summary,
    backlog,
    freshness_events,
    keys,
    landed_total,
    per_interval,
    protocols,
    query_events,
    rates,
    summarize,
)


@dataclass(frozen=True)
class Report:
    directory: Path
    html: Path
    csv: Path
    json: Path
    figures: dict[str, Path]
    summary: Summary


def csv_rows(record: RunRecord) -> tuple[list[str], list[dict[str, float]]]:
    """The samples flattened: fixed columns first, then one per protocol,
    source, process and counter (the union over all samples)."""
    samples = record.samples
    names = protocols(samples)
    landed = {p: rates(samples, [s.landed_rows.get(p, 0.0) for s in samples]) for p in names}
    total = rates(samples, [landed_total(s) for s in samples])
    lake = rates(samples, [s.lake_rows for s in samples])
    fresh = per_interval(samples, freshness_events(record.markers))
    query = per_interval(samples, query_events(record.queries))
    sources = keys([s.event_lag_s for s in samples], [s.freshest_lag_s for s in samples])
    processes = keys([s.processes for s in samples])
    counters = keys([s.counters for s in samples])
    gauges = keys([s.gauges for s in samples])
    tables = keys([s.lake_tables for s in samples])
    box = keys([s.box for s in samples])
    rows = []
    for i, s in enumerate(samples):
        row: dict[str, float] = {
            "t_s": round(s.t, 3),
            "landed_rows": landed_total(s),
            "landed_per_s": round(total[i], 2),
            "lake_rows": s.lake_rows,
            "lake_per_s": round(lake[i], 2),
            "backlog_rows": backlog(s),
            "landing_bytes": s.landing_bytes,
            "freshness_n": fresh[i].count,
            "freshness_p50_s": fresh[i].p50,
            "freshness_p99_s": fresh[i].p99,
            "query_n": query[i].count,
            "query_errors": query[i].errors,
            "query_p50_ms": query[i].p50,
            "query_p99_ms": query[i].p99,
            "machine_cpu_percent": round(s.machine_cpu_percent, 1),
            "steal_percent": round(s.steal_percent, 1),
            "mem_available_mb": round(s.mem_available_mb),
        }
        for p in names:
            row[f"landed_rows[{p}]"] = s.landed_rows.get(p, 0.0)
            row[f"landed_per_s[{p}]"] = round(landed[p][i], 2)
            row[f"online[{p}]"] = s.devices_online.get(p, 0)
        for t in tables:
            row[f"lake_rows[{t}]"] = s.lake_tables.get(t, math.nan)
        for src in sources:
            row[f"event_lag_s[{src}]"] = s.event_lag_s.get(src, math.nan)
            row[f"freshest_lag_s[{src}]"] = s.freshest_lag_s.get(src, math.nan)
        for name in processes:
            stat = s.processes.get(name)
            row[f"cpu_percent[{name}]"] = round(stat.cpu_percent, 1) if stat else math.nan
            row[f"rss_mb[{name}]"] = round(stat.rss_mb, 1) if stat else math.nan
        for name in counters:
            row[f"counter[{name}]"] = s.counters.get(name, math.nan)
        for name in gauges:
            row[f"gauge[{name}]"] = s.gauges.get(name, math.nan)
        for name in box:
            row[f"box[{name}]"] = s.box.get(name, math.nan)
        rows.append(row)
    header = list(rows[0]) if rows else ["t_s"]
    return header, rows


def write_csv(record: RunRecord, path: Path) -> Path:
    header, rows = csv_rows(record)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            )
    return path


def build_report(record: RunRecord, directory: Path) -> Report:
    """Write the whole report directory (overwriting its files); returns where."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = record.write(directory / "samples.json")
    csv_path = write_csv(record, directory / "samples.csv")
    figures = write_figures(record, directory)
    summary = summarize(record)
    html_path = directory / "index.html"
    html_path.write_text(render(record, summary, figures), encoding="utf-8")
    return Report(directory, html_path, csv_path, json_path, figures, summary)


def rebuild_report(directory: Path) -> Report:
    """The report again from ``directory/samples.json`` alone."""
    return build_report(RunRecord.read(directory / "samples.json"), directory)
