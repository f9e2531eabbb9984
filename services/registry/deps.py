"""What handlers depend on, injected so tests can override them."""

from __future__ import annotations

from fastapi import Request

from citylake.services.registry.catalog import DeviceCatalog


def get_catalog(request: Request) -> DeviceCatalog:
    catalog: DeviceCatalog = request.app.state.catalog
    return catalog
