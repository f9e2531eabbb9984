"""The region's sync receiver: a FastAPI app over ``RegionStore``.

Every route but ``/healthz`` needs ``X-API-Key`` when keys are configured,
and a site's routes need a key of that site (``sync/credentials.py``): one
edge cannot read, fill or empty another's partitions.
JSON bodies may come zstd-encoded (``Content-Encoding: zstd``); JSON answers
are zstd-encoded for clients that accept it. Refusals are 4xx with
``{"error": "...", ...details}`` and change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool

from citylake.config.models import SyncConfig
from citylake.lake.sites import site_regions, write_site_regions
from citylake.schemas import DataLayout
from citylake.sync import wire
from citylake.sync.credentials import SiteKeys, region_keys
from citylake.sync.merkle import Leaf
from citylake.sync.region import BadRequest, Limits, RegionStore, SyncRejected, TooLarge

log = logging.getLogger(__name__)
ModelT = TypeVar("ModelT", bound=BaseModel)

# Room for zstd's frame overhead on an incompressible chunk.
WIRE_SLACK = 64 * 1024


class RequestTimeout(SyncRejected):
    status = 408


class Unauthorized(SyncRejected):
    status = 401


class Forbidden(SyncRejected):
    status = 403


@dataclass(frozen=True)
class ReceiverSettings:
    data_dir: Path
    config: SyncConfig
    # This receiver's own site: the region of the sites it receives when it
    # is a region (no sync.regions), for the lake's `sites` view.
    site: str | None = None


class LeavesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    partitions: list[str]


class CommitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # partition -> [[name, size, sha256], ...]: the edge's whole partition.
    partitions: dict[str, list[tuple[str, int, str]]]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter(
            "sync_received_bytes", "Upload bytes written, decoded", ["site"], registry=self.registry
        )
        self.wire = Counter("sync_wire_bytes", "Upload bytes as sent", ["site"], registry=self.registry)
        self.commits = Counter("sync_commits", "Sync log commits", ["site", "table"], registry=self.registry)
        self.files_added = Counter("sync_files_added", "Files synced in", ["site"], registry=self.registry)
        self.files_removed = Counter(
            "sync_files_removed", "Synced files taken out (compacted or retired at the edge)", ["site"],
            registry=self.registry,
        )  # fmt: skip
        self.rejected = Counter("sync_rejected", "Refused requests", ["status"], registry=self.registry)


def _too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"the body is larger than the region's max_chunk_bytes ({limit}); "
        "set sync.chunk_bytes at most that on the edge"
    )


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The raw body, refused past ``limit`` bytes or after ``timeout_s``: a
    sender cut off mid-body must not hold a handler for ever."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise _too_large(limit)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for piece in request.stream():
                body += piece
                if len(body) > limit:
                    raise _too_large(limit)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout_s:.0f}s") from None
    return bytes(body)


def decode(request: Request, body: bytes, limit: int) -> bytes:
    try:
        return wire.decode(body, request.headers.get("content-encoding"), limit)
    except wire.BodyTooLarge:
        raise _too_large(limit) from None
    except wire.BadEncoding as exc:
        raise BadRequest(str(exc)) from None


def respond(request: Request, value: object, status: int = 200) -> Response:
    body = wire.dumps(value)
    headers = {}
    if len(body) >= wire.COMPRESS_MIN_BYTES and "zstd" in request.headers.get("accept-encoding", ""):
        body = wire.compress(body)
        headers["Content-Encoding"] = wire.ZSTD
    return Response(body, status, headers=headers, media_type="application/json")


@dataclass(frozen=True)
class Receiver:
    """What the routes share, kept on ``app.state.receiver``."""

    config: SyncConfig
    store: RegionStore
    metrics: Metrics
    keys: SiteKeys


def receiver(request: Request) -> Receiver:
    found: Receiver = request.app.state.receiver
    return found


def _key_sites(request: Request, given: str | None) -> frozenset[str] | None:
    """The sites the request's key opens; None when the region has no keys."""
    keys = receiver(request).keys
    if keys.open:
        return None
    sites = keys.sites_of(given)
    if not sites:
        raise Unauthorized(
            "missing or wrong X-API-Key header; set sync.api_key (or api_key_file) on the edge to the "
            "key the region lists for its site in sync.site_keys"
        )
    return sites


def guard(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
    _key_sites(request, x_api_key)


def site_allowed(
    request: Request, site: Annotated[str, PathParam()], x_api_key: Annotated[str | None, Header()] = None
) -> str:
    opened = _key_sites(request, x_api_key)
    if opened is not None and site not in opened:
        raise Forbidden(f"this key is not a key of site {site!r}: a site's key opens only its own site")
    sites = receiver(request).config.sites
    if sites and site not in sites:
        raise Forbidden(f"site {site!r} is not one of this region's sync.sites")
    return site


Site = Annotated[str, Depends(site_allowed)]


async def json_body(request: Request, model: type[ModelT]) -> ModelT:
    config = receiver(request).config
    raw = await read_body(request, config.max_chunk_bytes, config.request_timeout_s)
    data = decode(request, raw, config.max_chunk_bytes)
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BadRequest(f"invalid request body: {problems}") from None


def create_app(settings: ReceiverSettings) -> FastAPI:
    config = settings.config
    store = RegionStore(
        DataLayout(settings.data_dir),
        Limits(config.max_chunk_bytes, config.max_file_bytes, config.incoming_max_bytes),
        config.regions,
    )
    store.drop_stale_uploads()
    keys = region_keys(config)
    if settings.site is not None:
        keyed = [site for site, _ in keys.pairs]
        mapping = site_regions(settings.site, config.regions, [*config.sites, *keyed])
        write_site_regions(DataLayout(settings.data_dir), mapping)
    metrics = Metrics()
    # No /docs or /openapi.json: a machine API, and a map of it helps only an attacker.
    app = FastAPI(
        title="citylake sync receiver", version="1", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.receiver = Receiver(config, store, metrics, keys)

    @app.exception_handler(SyncRejected)
    async def rejected(request: Request, exc: SyncRejected) -> JSONResponse:
        metrics.rejected.labels(str(exc.status)).inc()
        log.info("%s %s refused (%d): %s", request.method, request.url.path, exc.status, exc)
        return JSONResponse({"error": str(exc), **exc.details}, exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The same shape as every other refusal, so an edge's log says what was wrong.
        metrics.rejected.labels("422").inc()
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        return JSONResponse({"error": f"invalid request: {problems}"}, 422)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", dependencies=[Depends(guard)])
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    prefix = "/v1/sync/sites/{site}"

    @app.get(prefix + "/tree", dependencies=[Depends(guard)])
    def tree(request: Request, site: Site) -> Response:
        """The site's root and table hashes, and the dates the region has retired."""
        site_tree, retained = store.tree(site)
        return respond(
            request,
            {
                "root": site_tree.root,
                "tables": site_tree.table_hashes(),
                "retained_from": {t: d.isoformat() for t, d in retained.items()},
            },
        )

    @app.get(prefix + "/tables/{table}/partitions", dependencies=[Depends(guard)])
    def partitions(request: Request, site: Site, table: str) -> Response:
        table_tree, _ = store.table_tree(site, table)
        return respond(request, {"partitions": table_tree.partition_hashes()})

    @app.post(prefix + "/tables/{table}/leaves", dependencies=[Depends(guard)])
    async def leaves(request: Request, site: Site, table: str) -> Response:
        wanted = await json_body(request, LeavesRequest)
        table_tree, _ = await run_in_threadpool(store.table_tree, site, table)
        found = {p: [leaf.wire() for leaf in table_tree.partitions.get(p, ())] for p in wanted.partitions}
        return respond(request, {"leaves": found})

    @app.get(prefix + "/uploads", dependencies=[Depends(guard)])
    def uploads(request: Request, site: Site) -> Response:
        """The site's uploads begun and not yet committed: [sha256, size, offset]."""
        return respond(request, {"uploads": [[u.sha256, u.size, u.offset] for u in store.uploads(site)]})

    @app.get(prefix + "/uploads/{sha256}", dependencies=[Depends(guard)])
    def upload_state(
        request: Request, site: Site, sha256: str, size: Annotated[int, Query(ge=0)]
    ) -> Response:
        return respond(request, store.upload_state(site, sha256, size).wire())

    @app.patch(prefix + "/uploads/{sha256}", dependencies=[Depends(guard)])
    async def append(
        request: Request,
        site: Site,
        sha256: str,
        size: Annotated[int, Query(ge=0)],
        offset: Annotated[int, Query(ge=0)],
    ) -> Response:
        """Bytes ``offset``.. of the file; the body may be zstd-encoded."""
        raw = await read_body(request, config.max_chunk_bytes + WIRE_SLACK, config.request_timeout_s)
        data = decode(request, raw, config.max_chunk_bytes)
        state = await run_in_threadpool(store.append, site, sha256, size, offset, data)
        metrics.received.labels(site).inc(len(data))
        metrics.wire.labels(site).inc(len(raw))
        return respond(request, state.wire())

    @app.post(prefix + "/tables/{table}/commit", dependencies=[Depends(guard)])
    async def commit(request: Request, site: Site, table: str) -> Response:
        """Each named partition of the site becomes exactly the listed files."""
        body = await json_body(request, CommitRequest)
        partitions_ = {p: [Leaf(n, s, h) for n, s, h in ls] for p, ls in body.partitions.items()}
        result = await run_in_threadpool(store.commit, site, table, partitions_)
        if result.version is not None:
            metrics.commits.labels(site, table).inc()
            metrics.files_added.labels(site).inc(result.added)
            metrics.files_removed.labels(site).inc(result.removed)
        return respond(
            request,
            {
                "version": result.version,
                "added": result.added,
                "removed": result.removed,
                "origins": list(result.origins),
            },
        )

    return app
