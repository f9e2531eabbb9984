"""Names that arrive over the wire, checked before any path is built from them,
and how a shipped file is named in a receiver's lake.

A receiver (a region, or the centre) holds the files of many sites side by
side in the same partition directories, so a shipped file's name carries the
site the data was first written at (its *origin*) and the file's sha256:
``synced-<origin>.<sha256>.parquet``. The name depends on nothing else, so a
file has one name at every tier: a region pushing its edges' files on to the
centre sends names the centre keeps as they are, and a file that reaches the
centre by two paths (through its region and directly), or twice through
retries, is one file there. Site names have no dots and hashes are hex, so
the name parses back unambiguously. Regions synced before this naming hold
``synced-<site>.<sha256>.<name on the edge>``; those parse too (origin and hash).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from citylake.lake.manifest import SYNCED_PREFIX
from citylake.schemas import PARTITION_COLUMN, TABLES, TableSpec

# The config's site names (citylake.config.models.Name).
SITE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A lake file's name on the edge: no separator, no leading dot (hidden files
# are in-progress), nothing a shell or a URL treats specially. 110 characters
# keep the region's name (prefix, site, hash, name) under the 255 of a file system.
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,109}$")
DATE_PARTITION = re.compile(rf"^{PARTITION_COLUMN}=(\d{{4}}-\d{{2}}-\d{{2}})$")


class InvalidName(ValueError):
    """A site, table, partition, file name or hash that the sync does not accept."""


class UnknownTable(InvalidName):
    """A table name that is not one of the lake's tables."""


def check_site(site: str) -> str:
    if not SITE.fullmatch(site):
        raise InvalidName(f"invalid site {site!r}: expected {SITE.pattern}")
    return site


def check_sha256(sha: str) -> str:
    if not SHA256.fullmatch(sha):
        raise InvalidName(f"invalid sha256 {sha!r}: expected 64 lowercase hex digits")
    return sha


def check_table(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise UnknownTable(f"unknown table {name!r}; tables: {', '.join(TABLES)}") from None


def check_file_name(name: str) -> str:
    if not FILE_NAME.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"invalid file name {name!r}: a plain name of at most 110 letters, digits, '_', '.', '=' "
            "or '-' (no path, no leading dot)"
        )
    return name


def check_partition(spec: TableSpec, partition: str) -> str:
    """``date=YYYY-MM-DD`` for a dated table, ``""`` (the table's directory) otherwise."""
    if spec.time_column is None:
        if partition != "":
            raise InvalidName(f"table {spec.name!r} has no partitions; got partition {partition!r}")
        return partition
    match = DATE_PARTITION.fullmatch(partition)
    if match is None:
        raise InvalidName(f"invalid partition {partition!r} of {spec.name!r}: expected date=YYYY-MM-DD")
    try:
        date.fromisoformat(match.group(1))
    except ValueError:
        raise InvalidName(f"invalid partition {partition!r} of {spec.name!r}: not a date") from None
    return partition


SYNCED_SUFFIX = "parquet"


@dataclass(frozen=True)
class SyncedName:
    """A shipped file's name in a receiver's lake: its origin site and sha256."""

    origin: str
    sha256: str
    rest: str = SYNCED_SUFFIX  # ``parquet``; a legacy region name's edge file name

    def __str__(self) -> str:
        return f"{SYNCED_PREFIX}{self.origin}.{self.sha256}.{self.rest}"

    @property
    def canonical(self) -> SyncedName:
        return SyncedName(self.origin, self.sha256)

    @classmethod
    def parse(cls, basename: str) -> SyncedName | None:
        if not basename.startswith(SYNCED_PREFIX):
            return None
        parts = basename[len(SYNCED_PREFIX) :].split(".", 2)
        if len(parts) != 3 or not SITE.fullmatch(parts[0]) or not SHA256.fullmatch(parts[1]):
            return None
        if not FILE_NAME.fullmatch(parts[2]) or ".." in parts[2]:
            return None
        return cls(parts[0], parts[1], parts[2])


def check_leaf_name(name: str) -> str:
    """A file name a sender lists: a plain lake file name (``check_file_name``),
    or a synced name of a receiver's lake (a region pushing on to the centre),
    which may be longer than 110 characters."""
    if SyncedName.parse(name) is not None:
        return name
    return check_file_name(name)


def origin_of(sender: str, name: str) -> str:
    """The site a listed file's data was first written at: named in a synced
    name; else the sender's own."""
    parsed = SyncedName.parse(name)
    return parsed.origin if parsed is not None else sender


def split_relative(relative: str) -> tuple[str, str]:
    """``date=…/name`` → (``date=…``, ``name``); a file at the table's root → (``""``, name)."""
    partition, _, name = relative.rpartition("/")
    return partition, name
