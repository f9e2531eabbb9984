"""Which region each site belongs to, as the lake's ``sites`` view shows it.

Rows carry ``site`` (their origin, checked at every tier); the region is not
stamped into the data but derived from the receiving tier's configuration
(the centre's ``sync.regions``, a region's own ``sync.sites``). Stamping a
column at the region would rewrite each file it receives, and a file's name
(origin, sha256) and bytes are the same at every tier: that is what makes a
file that reached the centre by two paths one file. Moving an edge to another
region is then a change of configuration, not of the data.

``sync serve`` writes the mapping to ``<lake>/_sites.json`` at start, so every
reader of that lake (``Lake``, ``citylake sql``, the query service and its
SQL workers, ``citylake lake views``) sees the same ``sites`` view without
being given the sync configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence

from citylake.schemas import DataLayout

SITES_FILE = "_sites.json"
SITES_VIEW = "sites"


def site_regions(own_site: str, regions: Mapping[str, Sequence[str]], sites: Sequence[str]) -> dict[str, str]:
    """site → region at a receiver: the centre's ``regions`` (each region is
    its own region too), else a region's accepted ``sites`` and itself."""
    mapping: dict[str, str] = {}
    if regions:
        for region, members in regions.items():
            mapping[region] = region
            for site in members:
                mapping[site] = region
        return mapping
    for site in (*sites, own_site):
        mapping[site] = own_site
    return mapping


def write_site_regions(layout: DataLayout, mapping: Mapping[str, str]) -> None:
    path = layout.lake_root / SITES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{SITES_FILE}.tmp")
    temporary.write_text(json.dumps(dict(sorted(mapping.items()))), "utf-8")
    os.replace(temporary, path)


def sites_mtime(layout: DataLayout) -> int:
    try:
        return os.stat(layout.lake_root / SITES_FILE).st_mtime_ns
    except FileNotFoundError:
        return 0


def load_site_regions(layout: DataLayout) -> dict[str, str]:
    """The mapping, or {} where no receiver ever ran (an edge)."""
    with contextlib.suppress(FileNotFoundError):
        raw = json.loads((layout.lake_root / SITES_FILE).read_text("utf-8"))
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
    return {}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sites_view_sql(mapping: Mapping[str, str]) -> str:
    """``sites(site, region)``: one row per site this tier knows a region of."""
    if not mapping:
        return (
            f'CREATE OR REPLACE VIEW "{SITES_VIEW}" AS '
            "SELECT NULL::VARCHAR AS site, NULL::VARCHAR AS region WHERE false"
        )
    rows = ", ".join(f"({_literal(s)}, {_literal(r)})" for s, r in sorted(mapping.items()))
    return f'CREATE OR REPLACE VIEW "{SITES_VIEW}" AS SELECT * FROM (VALUES {rows}) AS t(site, region)'
