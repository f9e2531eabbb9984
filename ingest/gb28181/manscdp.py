"""MANSCDP XML bodies (GB/T 28181-2016 Appendix A): decode, parse, build.

Bodies arrive in GB2312 or UTF-8, named by the XML declaration. GB2312 is
decoded with GB18030, its superset, because devices label GBK text (names
with characters outside GB2312) as GB2312; anything that is not valid in the
declared encoding is refused, never guessed at. ``xml.etree`` expands internal
entities, so a body with a DOCTYPE or ENTITY is refused before parsing: a
MANSCDP body never needs one, and that is what stops "billion laughs" bombs.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*?\?>", re.DOTALL)
_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
# Codec used for each declared encoding (lower case).
_CODECS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "gb18030": "gb18030",
    "utf-8": "utf-8",
    "utf8": "utf-8",
}
_FORBIDDEN = (b"<!doctype", b"<!entity")


class ManscdpError(ValueError):
    """A body that is not a MANSCDP document we can read; the message says why."""


def decode_body(body: bytes) -> tuple[str, str]:
    """(text without the XML declaration, declared encoding)."""
    lowered = body.lower()
    for marker in _FORBIDDEN:
        if marker in lowered:
            raise ManscdpError(
                f"XML with {marker.decode().upper()} refused (entity expansion is not allowed)"
            )
    declared = "utf-8"
    match = _DECLARATION.match(body)
    if match:
        found = _ENCODING.search(match.group(0))
        if found:
            declared = found.group(1).decode("ascii").lower()
        body = body[match.end() :]
    codec = _CODECS.get(declared)
    if codec is None:
        raise ManscdpError(f"unsupported XML encoding {declared!r} (expected GB2312 or UTF-8)")
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        raise ManscdpError(
            f"body is not valid {declared.upper()} (byte {exc.start}: {body[exc.start : exc.start + 4]!r})"
        ) from None
    return text.lstrip("\ufeff"), declared


def parse_xml(body: bytes) -> ET.Element:
    text, _ = decode_body(body)
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise ManscdpError(f"malformed XML: {exc}") from None


def _text(element: ET.Element, name: str) -> str | None:
    # Tag names are matched case-insensitively: devices write DeviceID,
    # DeviceId and deviceID alike.
    wanted = name.lower()
    for child in element:
        if child.tag.lower() == wanted:
            value = (child.text or "").strip()
            return value or None
    return None


def _child(element: ET.Element, name: str) -> ET.Element | None:
    wanted = name.lower()
    for child in element:
        if child.tag.lower() == wanted:
            return child
    return None


def _float(element: ET.Element, name: str) -> float | None:
    value = _text(element, name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ManscdpError(f"<{name}> is not a number: {value[:40]!r}") from None


def _int(element: ET.Element, name: str) -> int | None:
    value = _text(element, name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ManscdpError(f"<{name}> is not an integer: {value[:40]!r}") from None


@dataclass(frozen=True)
class Header:
    """What every MANSCDP document has."""

    root: str  # Query, Response, Notify, Control
    cmd_type: str
    sn: int | None
    device_id: str


@dataclass(frozen=True)
class Keepalive:
    header: Header
    status: str | None


@dataclass(frozen=True)
class CatalogItem:
    device_id: str
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    civil_code: str | None = None
    address: str | None = None
    parental: int | None = None
    parent_id: str | None = None
    status: str | None = None
    longitude: float | None = None
    latitude: float | None = None


@dataclass(frozen=True)
class CatalogResponse:
    header: Header
    sum_num: int
    num: int
    items: list[CatalogItem] = field(default_factory=list)


@dataclass(frozen=True)
class DeviceInfo:
    header: Header
    name: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    channels: int | None
    result: str | None


@dataclass(frozen=True)
class DeviceStatus:
    header: Header
    result: str | None
    online: str | None
    status: str | None
    encode: str | None
    record: str | None
    device_time: str | None


@dataclass(frozen=True)
class Alarm:
    header: Header
    priority: str | None
    method: str | None
    time: str | None
    description: str | None
    alarm_type: str | None
    longitude: float | None
    latitude: float | None


@dataclass(frozen=True)
class MobilePosition:
    header: Header
    time: str | None
    longitude: float | None
    latitude: float | None
    speed: float | None
    direction: float | None
    altitude: float | None


@dataclass(frozen=True)
class Other:
    """A well-formed document of a kind this platform does not interpret."""

    header: Header


Document = Keepalive | CatalogResponse | DeviceInfo | DeviceStatus | Alarm | MobilePosition | Other


def _header(root: ET.Element) -> Header:
    cmd_type = _text(root, "CmdType")
    if cmd_type is None:
        raise ManscdpError(f"<{root.tag}> has no <CmdType>")
    device_id = _text(root, "DeviceID")
    if device_id is None:
        raise ManscdpError(f"{cmd_type} has no <DeviceID>")
    return Header(root.tag, cmd_type, _int(root, "SN"), device_id)


def _catalog(root: ET.Element, header: Header) -> CatalogResponse:
    sum_num = _int(root, "SumNum")
    if sum_num is None:
        raise ManscdpError("Catalog response has no <SumNum>")
    device_list = _child(root, "DeviceList")
    items: list[CatalogItem] = []
    num = 0
    if device_list is not None:
        for item in device_list:
            if item.tag.lower() != "item":
                continue
            item_id = _text(item, "DeviceID")
            if item_id is None:
                raise ManscdpError("Catalog <Item> has no <DeviceID>")
            items.append(
                CatalogItem(
                    device_id=item_id,
                    name=_text(item, "Name"),
                    manufacturer=_text(item, "Manufacturer"),
                    model=_text(item, "Model"),
                    owner=_text(item, "Owner"),
                    civil_code=_text(item, "CivilCode"),
                    address=_text(item, "Address"),
                    parental=_int(item, "Parental"),
                    parent_id=_text(item, "ParentID"),
                    status=_text(item, "Status"),
                    longitude=_float(item, "Longitude"),
                    latitude=_float(item, "Latitude"),
                )
            )
        declared = device_list.get("Num")
        if declared is not None:
            if not declared.strip().isdigit():
                raise ManscdpError(f"<DeviceList Num={declared[:20]!r}> is not a number")
            num = int(declared)
            if num != len(items):
                raise ManscdpError(f"<DeviceList Num={num}> but {len(items)} <Item>s")
        else:
            num = len(items)
    if sum_num < num:
        raise ManscdpError(f"<SumNum>{sum_num}</SumNum> is less than the {num} items of one message")
    return CatalogResponse(header, sum_num, num, items)


def parse_document(body: bytes) -> Document:
    """Decode and interpret a MANSCDP body; ``ManscdpError`` saying why not."""
    root = parse_xml(body)
    header = _header(root)
    kind = header.cmd_type.lower()
    if kind == "keepalive":
        return Keepalive(header, _text(root, "Status"))
    if kind == "catalog" and header.root.lower() == "response":
        return _catalog(root, header)
    if kind == "deviceinfo" and header.root.lower() == "response":
        return DeviceInfo(
            header,
            name=_text(root, "DeviceName"),
            manufacturer=_text(root, "Manufacturer"),
            model=_text(root, "Model"),
            firmware=_text(root, "Firmware"),
            channels=_int(root, "Channel"),
            result=_text(root, "Result"),
        )
    if kind == "devicestatus" and header.root.lower() == "response":
        return DeviceStatus(
            header,
            result=_text(root, "Result"),
            online=_text(root, "Online"),
            status=_text(root, "Status"),
            encode=_text(root, "Encode"),
            record=_text(root, "Record"),
            device_time=_text(root, "DeviceTime"),
        )
    if kind == "alarm" and header.root.lower() == "notify":
        info = _child(root, "Info")
        return Alarm(
            header,
            priority=_text(root, "AlarmPriority"),
            method=_text(root, "AlarmMethod"),
            time=_text(root, "AlarmTime"),
            description=_text(root, "AlarmDescription"),
            alarm_type=_text(info, "AlarmType") if info is not None else None,
            longitude=_float(root, "Longitude"),
            latitude=_float(root, "Latitude"),
        )
    if kind == "mobileposition" and header.root.lower() == "notify":
        return MobilePosition(
            header,
            time=_text(root, "Time"),
            longitude=_float(root, "Longitude"),
            latitude=_float(root, "Latitude"),
            speed=_float(root, "Speed"),
            direction=_float(root, "Direction"),
            altitude=_float(root, "Altitude"),
        )
    return Other(header)


# --- what the platform sends --------------------------------------------------


def _document(root: str, fields: list[tuple[str, str]]) -> bytes:
    element = ET.Element(root)
    for name, value in fields:
        ET.SubElement(element, name).text = value
    # Queries carry only ASCII; GB2312 is what devices expect to see declared.
    text = ET.tostring(element, encoding="unicode")
    return b'<?xml version="1.0" encoding="GB2312"?>\r\n' + text.encode("gb18030")


def query(cmd_type: str, sn: int, device_id: str) -> bytes:
    """A Query (Catalog, DeviceInfo, DeviceStatus) for ``device_id``."""
    return _document("Query", [("CmdType", cmd_type), ("SN", str(sn)), ("DeviceID", device_id)])


def catalog_query(sn: int, device_id: str) -> bytes:
    return query("Catalog", sn, device_id)


def device_info_query(sn: int, device_id: str) -> bytes:
    return query("DeviceInfo", sn, device_id)


def alarm_response(sn: int | None, device_id: str) -> bytes:
    """The platform's answer to an Alarm notification (A.2.6)."""
    return _document(
        "Response",
        [
            ("CmdType", "Alarm"),
            ("SN", str(sn if sn is not None else 0)),
            ("DeviceID", device_id),
            ("Result", "OK"),
        ],
    )
