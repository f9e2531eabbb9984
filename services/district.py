"""The ``district`` filter every service shares: a GB/T 2260 code prefix or a
place name.

Devices carry their district two ways: ``devices.civil_code``, the GB/T 2260
code GB28181 catalogs and configured devices give, and ``devices.district``,
the name a source uses (an MQTT topic's ``{district}`` level, ``Gulou``). A
filter of digits is a code prefix; anything else is a name, matched whole and
case-insensitively.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Query

DISTRICT_MAX_CHARS = 64
# A code of 2..12 digits, or a name: letters of any script (鼓楼区 as well as
# Gulou), digits, spaces, dots and dashes, with at least one letter. Bound as
# SQL parameters anyway, but a 422 naming the rule helps more than an empty
# answer for a stray quote or a one-digit code.
DISTRICT_PATTERN = r"^(?:[0-9]{2,12}|[\w .-]*[^\W\d][\w .-]*)$"

DISTRICT_DOC = """\
Digits: an administrative area, as a prefix of `devices.civil_code`, the
GB/T 2260 division code that GB28181 catalogs and configured devices carry
(and the first 8 digits of a GB28181 device id). 2 digits = province, 4 =
city, 6 = county-level district, 8 = township or street; e.g. `3201` is all
of Nanjing, `320106` its Gulou district. Anything else: a district name,
matched whole and case-insensitively against `devices.district` (the name a
source reports, e.g. an MQTT topic's `{district}` level: `gulou` matches
`Gulou`). A device with neither belongs to no district.
"""

# Bound as SQL parameters; both NULL when no district is asked for.
DISTRICT_SQL = (
    "($district_code IS NULL OR starts_with(civil_code, $district_code)) "
    "AND ($district_name IS NULL OR lower(district) = lower($district_name))"
)


@dataclass(frozen=True)
class DistrictFilter:
    """A parsed ``district`` query parameter."""

    code_prefix: str | None = None
    name: str | None = None

    @classmethod
    def parse(cls, district: str | None) -> DistrictFilter:
        if district is None:
            return cls()
        # isdigit() alone accepts other scripts' digits, which no civil code has.
        if district.isascii() and district.isdigit():
            return cls(code_prefix=district)
        return cls(name=district)

    @property
    def active(self) -> bool:
        return self.code_prefix is not None or self.name is not None

    def parameters(self) -> dict[str, object]:
        return {"district_code": self.code_prefix, "district_name": self.name}


DistrictQuery = Annotated[
    str | None, Query(pattern=DISTRICT_PATTERN, max_length=DISTRICT_MAX_CHARS, description=DISTRICT_DOC)
]
