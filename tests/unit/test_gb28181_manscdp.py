"""MANSCDP bodies: encodings (GB2312 Chinese names intact), every document
kind, multi-message catalogs, refused XML bombs, the platform's own queries."""

from __future__ import annotations

import pytest

from citylake.ingest.gb28181 import manscdp

NVR = "34020000001180000001"


def catalog(
    encoding: str, sn: int, sum_num: int, items: list[tuple[str, str]], num: int | None = None
) -> bytes:
    entries = "".join(
        f"<Item><DeviceID>{i}</DeviceID><Name>{name}</Name><Manufacturer>海康</Manufacturer>"
        f"<CivilCode>340200</CivilCode><Address>人民路1号</Address><ParentID>{NVR}</ParentID>"
        f"<Status>ON</Status><Longitude>117.2</Longitude><Latitude>31.8</Latitude></Item>"
        for i, name in items
    )
    count = len(items) if num is None else num
    text = (
        f'<?xml version="1.0" encoding="{encoding}"?>\r\n<Response><CmdType>Catalog</CmdType><SN>{sn}</SN>'
        f"<DeviceID>{NVR}</DeviceID><SumNum>{sum_num}</SumNum>"
        f'<DeviceList Num="{count}">{entries}</DeviceList></Response>'
    )
    return text.encode("gb2312" if encoding == "GB2312" else "utf-8")


@pytest.mark.parametrize("encoding", ["GB2312", "UTF-8", "gb2312"])
def test_catalog_names_in_chinese_arrive_intact(encoding: str) -> None:
    body = catalog(
        encoding.upper(), 7, 2, [("34020000001310000001", "东门摄像机"), ("34020000001310000002", "西门")]
    )
    if encoding == "gb2312":
        body = body.replace(b'encoding="GB2312"', b'encoding="gb2312"')
    document = manscdp.parse_document(body)
    assert isinstance(document, manscdp.CatalogResponse)
    assert (document.header.sn, document.header.device_id, document.sum_num, document.num) == (7, NVR, 2, 2)
    assert [i.name for i in document.items] == ["东门摄像机", "西门"]
    first = document.items[0]
    assert (first.manufacturer, first.address, first.parent_id, first.status) == (
        "海康",
        "人民路1号",
        NVR,
        "ON",
    )
    assert (first.longitude, first.latitude, first.civil_code) == (117.2, 31.8, "340200")


def test_gbk_characters_labelled_gb2312_are_read() -> None:
    # 堃 is in GBK, not in GB2312: devices label GBK text GB2312 all the time.
    body = '<?xml version="1.0" encoding="GB2312"?><Notify><CmdType>Alarm</CmdType><DeviceID>1</DeviceID>'
    body += "<AlarmDescription>堃</AlarmDescription></Notify>"
    document = manscdp.parse_document(body.encode("gbk"))
    assert isinstance(document, manscdp.Alarm) and document.description == "堃"


def test_multi_message_catalog() -> None:
    first = manscdp.parse_document(catalog("GB2312", 3, 3, [("1", "甲"), ("2", "乙")]))
    second = manscdp.parse_document(catalog("GB2312", 3, 3, [("3", "丙")]))
    assert isinstance(first, manscdp.CatalogResponse) and isinstance(second, manscdp.CatalogResponse)
    assert (first.sum_num, first.num, second.sum_num, second.num) == (3, 2, 3, 1)
    assert [i.device_id for i in first.items + second.items] == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (catalog("UTF-8", 1, 3, [("1", "a")], num=2), "Num=2> but 1 <Item>s"),
        (catalog("UTF-8", 1, 0, [("1", "a")]), "SumNum>0</SumNum> is less than"),
        (b"<Response><CmdType>Catalog</CmdType><DeviceID>1</DeviceID></Response>", "no <SumNum>"),
        (b"<Notify><DeviceID>1</DeviceID></Notify>", "no <CmdType>"),
        (b"<Notify><CmdType>Keepalive</CmdType></Notify>", "no <DeviceID>"),
        (b"<Notify><CmdType>Keepalive</CmdType>", "malformed XML"),
        (b"<Notify><CmdType>MobilePosition</CmdType><DeviceID>1</DeviceID><Speed>x</Speed></Notify>",
         "not a number"),
        ('<?xml version="1.0" encoding="UTF-8"?><a>中</a>'.encode("gb2312"), "not valid UTF-8"),
        (b'<?xml version="1.0" encoding="GB2312"?><a>\x80\xff</a>', "not valid GB2312"),
        (b'<?xml version="1.0" encoding="Shift_JIS"?><a/>', "unsupported XML encoding 'shift_jis'"),
    ],
)  # fmt: skip
def test_bad_bodies_say_why(body: bytes, why: str) -> None:
    with pytest.raises(manscdp.ManscdpError, match=why.replace("<", ".").replace(">", ".")):
        manscdp.parse_document(body)


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<Notify><CmdType>Keepalive</CmdType><DeviceID>&lol3;</DeviceID></Notify>"""


@pytest.mark.parametrize("body", [BOMB, BOMB.replace(b"DOCTYPE", b"doctype"), b"<a><!ENTITY x 'y'></a>"])
def test_xml_bombs_are_refused_before_parsing(body: bytes) -> None:
    with pytest.raises(manscdp.ManscdpError, match="refused"):
        manscdp.parse_document(body)


def test_keepalive_deviceinfo_devicestatus_alarm_position() -> None:
    keepalive = manscdp.parse_document(
        b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>X</DeviceID><Status>OK</Status></Notify>"
    )
    assert keepalive == manscdp.Keepalive(manscdp.Header("Notify", "Keepalive", 1, "X"), "OK")
    info = manscdp.parse_document(
        "<Response><CmdType>DeviceInfo</CmdType><SN>2</SN><DeviceID>X</DeviceID><DeviceName>录像机</DeviceName>"
        "<Result>OK</Result><Manufacturer>Dahua</Manufacturer><Model>M</Model><Firmware>1.0</Firmware>"
        "<Channel>16</Channel></Response>".encode()
    )
    assert isinstance(info, manscdp.DeviceInfo)
    assert (info.name, info.manufacturer, info.model, info.firmware, info.channels) == (
        "录像机",
        "Dahua",
        "M",
        "1.0",
        16,
    )
    status = manscdp.parse_document(
        b"<Response><CmdType>DeviceStatus</CmdType><SN>3</SN><DeviceID>X</DeviceID><Result>OK</Result>"
        b"<Online>ONLINE</Online><Status>OK</Status><Record>OFF</Record></Response>"
    )
    assert isinstance(status, manscdp.DeviceStatus) and (status.online, status.record) == ("ONLINE", "OFF")
    alarm = manscdp.parse_document(
        b"<Notify><CmdType>Alarm</CmdType><SN>4</SN><DeviceID>C</DeviceID><AlarmPriority>1</AlarmPriority>"
        b"<AlarmMethod>5</AlarmMethod><AlarmTime>2026-11-25T10:00:00</AlarmTime><Longitude>1.5</Longitude>"
        b"<Info><AlarmType>2</AlarmType></Info></Notify>"
    )
    assert isinstance(alarm, manscdp.Alarm)
    assert (alarm.priority, alarm.method, alarm.alarm_type, alarm.longitude, alarm.latitude) == (
        "1",
        "5",
        "2",
        1.5,
        None,
    )
    position = manscdp.parse_document(
        b"<Notify><CmdType>MobilePosition</CmdType><SN>5</SN><DeviceID>C</DeviceID><Time>2026-11-25T10:00:05</Time>"
        b"<Longitude>117.1</Longitude><Latitude>31.2</Latitude><Speed>0</Speed><Direction>270</Direction></Notify>"
    )
    assert isinstance(position, manscdp.MobilePosition)
    assert (position.longitude, position.latitude, position.speed, position.direction, position.altitude) == (
        117.1, 31.2, 0.0, 270.0, None,
    )  # fmt: skip
    other = manscdp.parse_document(
        b"<Query><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>X</DeviceID></Query>"
    )
    assert other == manscdp.Other(manscdp.Header("Query", "Catalog", 1, "X"))


def test_tag_names_are_matched_case_insensitively() -> None:
    document = manscdp.parse_document(b"<Notify><cmdtype>Keepalive</cmdtype><DeviceId>X</DeviceId></Notify>")
    assert isinstance(document, manscdp.Keepalive) and document.header.device_id == "X"


def test_platform_queries_and_alarm_response() -> None:
    query = manscdp.catalog_query(17, NVR)
    assert query.startswith(b'<?xml version="1.0" encoding="GB2312"?>')
    parsed = manscdp.parse_document(query)
    assert parsed == manscdp.Other(manscdp.Header("Query", "Catalog", 17, NVR))
    info = manscdp.parse_document(manscdp.device_info_query(18, NVR))
    assert isinstance(info, manscdp.Other) and info.header.cmd_type == "DeviceInfo"
    response = manscdp.alarm_response(4, "34020000001310000001")
    root = manscdp.parse_xml(response)
    assert [(c.tag, c.text) for c in root] == [
        ("CmdType", "Alarm"),
        ("SN", "4"),
        ("DeviceID", "34020000001310000001"),
        ("Result", "OK"),
    ]
