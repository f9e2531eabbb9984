"""A local wheel directory for citylake's product dependencies, repacked from
the distributions installed in this (the shared) venv.

Why: the product-install test (tests/integration/test_wheel.py) installs
citylake's wheel into a clean venv. From the index that downloads ~1 GB on
every run (measured 10m47s on the shared machine; pip's HTTP cache stayed
empty, so a second run is no faster). The shared venv holds every locked
version already, so each needed distribution is zipped back into a wheel from
its RECORD (stored, not compressed) and pip installs with --no-index. pip still
resolves against constraints.txt, so a version the lock does not name fails.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# RECORD entries pip writes at install time, not part of a wheel.
_INSTALL_ONLY = {"INSTALLER", "RECORD", "REQUESTED", "direct_url.json", "REFER_TO"}


def product_closure(root: str = "citylake") -> list[metadata.Distribution]:
    """The distributions ``pip install root`` (no extras) needs, from this venv."""
    wanted: dict[str, set[str]] = {}
    found: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in wanted and extras <= wanted[key]:
            continue
        wanted.setdefault(key, set()).update(extras)
        dist = metadata.distribution(name)
        found[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": extra}) for extra in (wanted[key] or {""})
            ):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return [d for k, d in found.items() if k != canonicalize_name(root)]


def _entries(dist: metadata.Distribution) -> Iterator[tuple[Path, str]]:
    """(file on disk, its name in the wheel) for each installed file."""
    info = Path(str(dist._path))  # type: ignore[attr-defined]
    site = info.parent
    data = f"{info.name.removesuffix('.dist-info')}.data"
    scripts = {ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")}
    for file in dist.files or []:
        parts = Path(str(file)).parts
        if "__pycache__" in parts or (parts[0] == info.name and parts[-1] in _INSTALL_ONLY):
            continue
        if parts[0] != "..":
            yield site / file, "/".join(parts)
            continue
        # Outside site-packages: <venv>/bin/... and <venv>/share/... etc.
        outside = Path(os.path.normpath(site / file)).relative_to(site.parents[2])
        if outside.parts[0] == "bin":
            if outside.name in scripts:
                continue  # pip writes console scripts from entry_points.txt
            yield site / file, f"{data}/scripts/{outside.name}"
        else:
            yield site / file, f"{data}/data/{outside.as_posix()}"


def repack(dist: metadata.Distribution, into: Path) -> Path:
    info = Path(str(dist._path))  # type: ignore[attr-defined]
    wheel_file = (info / "WHEEL").read_text()
    tags = [line.split(":", 1)[1].strip() for line in wheel_file.splitlines() if line.startswith("Tag:")]
    stem = info.name.removesuffix(".dist-info")
    # A wheel's name compresses its tag set: each part is the sorted, dotted set.
    parts = ["-".join(".".join(sorted({t.split("-")[i] for t in tags})) for i in range(3))]
    target = into / f"{stem}-{parts[0]}.whl"
    record: list[str] = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as wheel:
        for path, arcname in _entries(dist):
            if not path.is_file():
                continue
            body = path.read_bytes()
            wheel.writestr(zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0)), body)
            digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
            record.append(f"{arcname},sha256={digest},{len(body)}")
        record.append(f"{info.name}/RECORD,,")
        wheel.writestr(f"{info.name}/RECORD", "\n".join(record) + "\n")
    return target


def build_wheelhouse(into: Path) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    return [repack(dist, into) for dist in product_closure()]
