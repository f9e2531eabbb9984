"""Content negotiation for every tabular route: JSON by default, an Arrow IPC
stream when the client asks for ``application/vnd.apache.arrow.stream``.

Arrow wins only when the client names it and does not prefer JSON (by
q-value) over it; wildcards (``*/*``, ``application/*``) count for JSON, the
default. An Accept header naming neither still gets JSON rather than a 406:
the services answer scripts and dashboards, which send odd Accept headers, and
JSON is what the OpenAPI document promises first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import Request, Response
from pydantic import BaseModel

ARROW_STREAM = "application/vnd.apache.arrow.stream"
JSON = "application/json"


class Representation(StrEnum):
    json = "json"
    arrow = "arrow"


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for element in accept.split(","):
        media, *params = (part.strip() for part in element.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0  # an unreadable weight: the range is ignored rather than guessed
        ranges.append((media.lower(), q))
    return ranges


def negotiate(accept: str | None) -> Representation:
    if not accept:
        return Representation.json
    arrow_q = 0.0
    json_q = 0.0
    for media, q in _media_ranges(accept):
        if media == ARROW_STREAM:
            arrow_q = max(arrow_q, q)
        elif media in (JSON, "application/*", "*/*"):
            json_q = max(json_q, q)
    return Representation.arrow if arrow_q > 0 and arrow_q >= json_q else Representation.json


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def with_lake_instants(table: pa.Table) -> pa.Table:
    """Timestamps as the lake stores them (ms, UTC); DuckDB hands out microseconds."""
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            column = pc.cast(table.column(index), pa.timestamp("ms", tz="UTC"), safe=False)
            table = table.set_column(index, pa.field(field.name, column.type, field.nullable), column)
    return table


def tabular_response(
    request: Request,
    table: pa.Table,
    json_body: Callable[[], BaseModel],
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``table`` as an Arrow stream, or ``json_body()`` as JSON, as the client asked."""
    all_headers = {"Vary": "Accept", **(headers or {})}
    if negotiate(request.headers.get("accept")) is Representation.arrow:
        return Response(arrow_stream(with_lake_instants(table)), media_type=ARROW_STREAM, headers=all_headers)
    return Response(json_body().model_dump_json(), media_type=JSON, headers=all_headers)


def tabular_openapi(description: str) -> dict[int | str, dict[str, Any]]:
    """The 200 entry of a tabular route: the JSON model (from response_model) or Arrow."""
    return {
        200: {
            "description": description,
            "content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        }
    }
