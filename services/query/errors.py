"""Errors the query service answers with, and how they are rendered.

Every error body is ``{"detail": "...", "limit": "..."}``: ``detail`` says what
was wrong in words a caller can act on, ``limit`` (only when a configured limit
was hit) names the ``services.query`` key of city.yaml that set it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException


class ErrorBody(BaseModel):
    detail: str
    limit: str | None = None


class QueryError(Exception):
    """A request the service understood but will not answer as asked."""

    def __init__(self, status_code: int, detail: str, limit: str | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.limit = limit


def bad_request(detail: str, limit: str | None = None) -> QueryError:
    return QueryError(status.HTTP_400_BAD_REQUEST, detail, limit)


def too_slow(limit: str, seconds: float) -> QueryError:
    # 408, not 504: the query itself is too expensive, so retrying it as is (as
    # Dapr's resiliency policies do for 5xx) would only burn the same time again.
    return QueryError(
        status.HTTP_408_REQUEST_TIMEOUT,
        f"the query ran longer than the time limit of {seconds:g} s ({limit}) and was cancelled; "
        "narrow it (a shorter time range, fewer devices, an aggregate)",
        limit,
    )


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer."""
    reasons = {
        400: "the request is well-formed but cannot be answered as asked (the detail says why)",
        401: "missing or wrong X-API-Key",
        404: "no such device (or metric) in the lake",
        408: "the query hit its time limit and was cancelled",
        413: "the request body or the SQL text is larger than its limit",
        429: "too many SQL queries running at once",
        503: "the lake cannot be read now (the detail says why); retry later",
    }
    return {code: {"model": ErrorBody, "description": reasons[code]} for code in codes}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QueryError)
    async def query_error(_: Request, exc: QueryError) -> JSONResponse:
        body = ErrorBody(detail=exc.detail, limit=exc.limit)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=exc.status_code)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # FastAPI answers any body it cannot decode with one generic sentence;
        # the cause it chains says what was actually wrong.
        cause = exc.__cause__
        if exc.status_code == status.HTTP_400_BAD_REQUEST and isinstance(cause, UnicodeDecodeError):
            detail = (
                f"the request body is not UTF-8 (byte 0x{cause.object[cause.start]:02x} at offset "
                f"{cause.start}); send JSON encoded as UTF-8"
            )
            return JSONResponse(ErrorBody(detail=detail).model_dump(exclude_none=True), status_code=400)
        return await http_exception_handler(request, exc)
