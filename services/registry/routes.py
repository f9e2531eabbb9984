"""``/v1/devices``: search the device catalog, or fetch one device."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from citylake.services.district import DistrictQuery
from citylake.services.registry.catalog import BoundingBox, DeviceCatalog, DeviceSearch
from citylake.services.registry.deps import get_catalog
from citylake.services.registry.models import Device, DevicePage

router = APIRouter(prefix="/v1", tags=["devices"])

Catalog = Annotated[DeviceCatalog, Depends(get_catalog)]
# Plain words only: the filters are bound as SQL parameters anyway, but a 422
# that names the rule helps more than an empty page for a typo.
_WORD = r"^[A-Za-z0-9_.-]+$"


@router.get("/devices", response_model=DevicePage, summary="Search devices")
def search_devices(
    catalog: Catalog,
    district: DistrictQuery = None,
    type: Annotated[
        str | None, Query(pattern=_WORD, max_length=64, description="device type, e.g. ipc, nvr")
    ] = None,
    device_status: Annotated[
        str | None,
        Query(alias="status", pattern=_WORD, max_length=32, description="online or offline"),
    ] = None,
    protocol: Annotated[
        str | None, Query(pattern=_WORD, max_length=32, description="an adapter type (sources[].type)")
    ] = None,
    bbox: Annotated[
        str | None,
        Query(
            max_length=200,
            description="min_lon,min_lat,max_lon,max_lat (WGS 84 degrees); devices without a position "
            "are left out",
            examples=["116.2,39.8,116.5,40.0"],
        ),
    ] = None,
    after: Annotated[str | None, Query(max_length=128, description="the previous page's next_after")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="devices per page")] = 100,
) -> DevicePage:
    box = None
    if bbox is not None:
        try:
            box = BoundingBox.parse(bbox)
        except ValueError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"query.bbox: {exc}") from None
    page = catalog.search(
        DeviceSearch(
            district=district,
            type=type,
            status=device_status,
            protocol=protocol,
            bbox=box,
            after=after,
            limit=limit,
        )
    )
    return DevicePage(
        devices=[Device(**row) for row in page.devices], total=page.total, next_after=page.next_after
    )


@router.get("/devices/{device_id}", response_model=Device, summary="One device")
def get_device(
    catalog: Catalog,
    device_id: Annotated[str, Path(min_length=1, max_length=128, description="devices.device_id")],
) -> Device:
    row = catalog.get(device_id)
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"no device {device_id!r} in the registry (lake devices, device_events or city.yaml)",
        )
    return Device(**row)
