"""GB/T 28181-2016 20-digit codes (Appendix D): validation and decoding.

``34020000 00 132 7 000001`` is centre/civil code (8: province 2, city 2,
district 2, grass-roots unit 2), industry (2), type (3), network (1), serial (6).
"""

from __future__ import annotations

from dataclasses import dataclass

# Appendix D type codes: 111-130 front-end main devices, 131-199 peripherals,
# 200-299 platform devices, 300-399 central users, 400-499 terminal users.
TYPE_NAMES: dict[str, str] = {
    "111": "dvr",
    "112": "video_server",
    "113": "encoder",
    "114": "decoder",
    "115": "video_matrix",
    "116": "audio_matrix",
    "117": "alarm_controller",
    "118": "nvr",
    "119": "hvr",
    "131": "camera",
    "132": "ipc",
    "133": "display",
    "134": "alarm_input",
    "135": "alarm_output",
    "136": "audio_input",
    "137": "audio_output",
    "138": "mobile_device",
    "139": "peripheral",
    "200": "platform",
    "201": "web_server",
    "202": "media_server",
    "203": "proxy_server",
    "204": "security_server",
    "205": "alarm_server",
    "206": "database_server",
    "207": "gis_server",
    "208": "management_server",
    "209": "gateway",
    "210": "media_storage",
    "211": "signalling_gateway",
    "215": "business_group",
    "216": "virtual_org",
}

NETWORK_NAMES: dict[str, str] = {
    "0": "public_security_video",
    "1": "public_security_video",
    "2": "public_security_video",
    "3": "public_security_video",
    "4": "public_security_video",
    "5": "public_security_mobile",
    "6": "public_security_mobile",
    "7": "public_network",
    "8": "government_network",
    "9": "private_network",
}


class InvalidDeviceId(ValueError):
    pass


@dataclass(frozen=True)
class DeviceId:
    value: str
    civil_code: str
    industry: str
    type_code: str
    network: str
    serial: str

    @property
    def type_name(self) -> str:
        """A name for the type code; ranges the table does not name get a class."""
        known = TYPE_NAMES.get(self.type_code)
        if known is not None:
            return known
        code = int(self.type_code)
        if 111 <= code <= 130:
            return "front_end_device"
        if 131 <= code <= 199:
            return "front_end_peripheral"
        if 200 <= code <= 299:
            return "platform_device"
        if 300 <= code <= 399:
            return "central_user"
        if 400 <= code <= 499:
            return "terminal_user"
        return f"type_{self.type_code}"

    @property
    def network_name(self) -> str:
        return NETWORK_NAMES[self.network]

    def columns(self) -> dict[str, str]:
        """What the registry records about the id itself."""
        return {
            "device_id": self.value,
            "civil_code": self.civil_code,
            "industry": self.industry,
            "type_code": self.type_code,
            "type": self.type_name,
            "network": self.network,
            "serial": self.serial,
        }


def parse_device_id(value: str) -> DeviceId:
    """The decoded id; ``InvalidDeviceId`` saying why it is not one."""
    if len(value) != 20:
        raise InvalidDeviceId(f"device id {value[:40]!r} has {len(value)} characters, expected 20 digits")
    if not (value.isascii() and value.isdigit()):
        raise InvalidDeviceId(f"device id {value!r} is not 20 decimal digits")
    return DeviceId(value, value[:8], value[8:10], value[10:13], value[13], value[14:])


def is_device_id(value: str) -> bool:
    return len(value) == 20 and value.isascii() and value.isdigit()
