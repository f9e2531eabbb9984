"""422 answers that a person can read: one sentence naming each bad field,
with FastAPI's structured list kept beside it for programs."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def describe(errors: Any) -> str:
    """``body.above: Input should be a valid number; query.limit: ...``."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()))
        # pydantic prefixes messages of our own validators; the prefix says nothing to a reader.
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "invalid request"


def add_readable_validation_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def unprocessable(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"detail": describe(exc.errors()), "errors": jsonable_encoder(exc.errors())},
        )
