"""The Merkle tree both ends of a sync compute over one site's lake.

Leaves are files (name, size, sha256), grouped by partition; a partition's
hash covers its sorted leaves, a table's hash its sorted partition hashes, the
site's root its sorted table hashes. Empty partitions and tables are left out,
so "absent" and "empty" hash alike. After an outage the two ends compare the
root, then the hashes of differing tables, then the leaves of differing
partitions only: the bytes exchanged grow with what changed, not with the lake.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from citylake.lake.manifest import partition_date


@dataclass(frozen=True, order=True)
class Leaf:
    name: str
    size: int
    sha256: str

    def wire(self) -> list[object]:
        return [self.name, self.size, self.sha256]


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode())
    return h.hexdigest()


def partition_hash(leaves: Iterable[Leaf]) -> str:
    # Names are checked to hold no tab or newline (sync/names.py), so the
    # lines cannot be forged by a name that looks like two leaves.
    return _digest(f"{leaf.name}\t{leaf.size}\t{leaf.sha256}\n" for leaf in leaves)


def combine(children: Mapping[str, str]) -> str:
    """A table's hash from its partitions' hashes, or the root from the tables'."""
    return _digest(f"{key}\t{value}\n" for key, value in children.items())


@dataclass(frozen=True)
class TableTree:
    """One table of one site: its non-empty partitions and their leaves."""

    partitions: Mapping[str, tuple[Leaf, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, leaves: Mapping[str, Iterable[Leaf]]) -> TableTree:
        return cls({p: tuple(sorted(ls)) for p, ls in leaves.items() if ls})

    def partition_hashes(self) -> dict[str, str]:
        return {p: partition_hash(leaves) for p, leaves in self.partitions.items()}

    @property
    def hash(self) -> str:
        return combine(self.partition_hashes())

    @property
    def files(self) -> int:
        return sum(len(ls) for ls in self.partitions.values())

    @property
    def bytes(self) -> int:
        return sum(leaf.size for ls in self.partitions.values() for leaf in ls)

    def since(self, retained_from: date | None) -> TableTree:
        """Without the date partitions the other end has retired."""
        if retained_from is None:
            return self
        return TableTree(
            {
                p: ls
                for p, ls in self.partitions.items()
                if (d := partition_date(p)) is None or d >= retained_from
            }
        )


@dataclass(frozen=True)
class SiteTree:
    tables: Mapping[str, TableTree] = field(default_factory=dict)

    def table_hashes(self) -> dict[str, str]:
        return {name: t.hash for name, t in self.tables.items() if t.partitions}

    @property
    def root(self) -> str:
        return combine(self.table_hashes())

    @property
    def files(self) -> int:
        return sum(t.files for t in self.tables.values())

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables.values())

    def since(self, retained_from: Mapping[str, date]) -> SiteTree:
        return SiteTree({n: t.since(retained_from.get(n)) for n, t in self.tables.items()})


def differing(mine: Mapping[str, str], theirs: Mapping[str, str]) -> list[str]:
    """Keys whose hash differs, including keys only one side has; sorted."""
    return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))


def missing(edge: Iterable[Leaf], region: Iterable[Leaf]) -> list[Leaf]:
    """The edge's leaves the region lacks (a same-named file with another size
    or hash counts as lacking: the region names files by their hash)."""
    have = set(region)
    return sorted(leaf for leaf in edge if leaf not in have)
