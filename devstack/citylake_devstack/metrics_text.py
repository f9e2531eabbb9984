"""A Prometheus endpoint read from outside, with prometheus_client's own
parser: what the scale run's probes and the ingest probe both sample."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, client: httpx.Client) -> Metrics:
    """Every sample of a Prometheus endpoint, keyed by (name, sorted labels); {} if unreachable."""
    try:
        text = client.get(url, timeout=5).text
    except httpx.HTTPError:
        return {}
    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def total(metrics: Metrics, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        value
        for (n, ls), value in metrics.items()
        if n == name and all((k, v) in ls for k, v in labels.items())
    )
