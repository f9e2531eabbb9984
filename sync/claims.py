"""What each sender last committed to this receiver, per table and partition.

A receiver's lake holds one file per (origin site, sha256), however many
senders listed it: an edge pushing to its region and directly to the centre,
and its region pushing the same file on. So the lake alone cannot say what
one sender's lake holds. The sender's claim can: the files (as the sender
names them) of its last commit of each partition, kept in
``<data_dir>/sync/claims/<sender>/<table>.json``. The receiver's tree for a
sender is its claim, so a sender compares against what it said itself, and
an edge's direct push does not make its region ship again (or the other way).

Written after the commit's log version, under the table's writer lock: a
crash between the two leaves the claim behind the lake, and the sender's next
round commits the same files again (a commit of what is live changes nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from citylake.sync.merkle import Leaf

Claim = dict[str, tuple[Leaf, ...]]  # partition -> the sender's files in it


class Claims:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "sync" / "claims"

    def _path(self, sender: str, table: str) -> Path:
        # Both checked names (sync/names.py) before they get here: no separators.
        return self.root / sender / f"{table}.json"

    def load(self, sender: str, table: str) -> Claim:
        with contextlib.suppress(FileNotFoundError):
            raw = json.loads(self._path(sender, table).read_text("utf-8"))
            return {p: tuple(Leaf(str(n), int(s), str(h)) for n, s, h in ls) for p, ls in raw.items()}
        return {}

    def save(self, sender: str, table: str, claim: Mapping[str, Sequence[Leaf]]) -> None:
        path = self._path(sender, table)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        document = {p: [leaf.wire() for leaf in sorted(ls)] for p, ls in sorted(claim.items()) if ls}
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump(document, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
