"""Register-map profiles: YAML files of fields, shared by every device of a model.

A profile is data (as EdgeX device profiles are), validated by the same
``RegisterField`` model as inline fields. ``profile: pump-station`` names
``ingest/profiles/pump-station.yaml``; anything with a ``/`` or a ``.yaml``
suffix is a path (relative ones to the working directory).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from citylake.config import ConfigDocument, ConfigError
from citylake.ingest.modbus.fields import ModbusProfile

PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the problem."""


def profile_path(reference: str) -> Path:
    """The file a ``profile:`` value refers to."""
    if _NAME.match(reference):
        return PROFILES_DIR / f"{reference}.yaml"
    if "/" in reference or reference.endswith((".yaml", ".yml")):
        return Path(reference).expanduser()
    raise ProfileError(
        f"profile {reference!r}: expected a profile name (lowercase letters, digits, - and _; "
        f"one of {', '.join(available_profiles()) or 'none'}) or a path to a .yaml file"
    )


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``ingest/profiles/``."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


# Parsed profiles by (file, mtime, size): a site of a thousand devices of one
# model names the same profile a thousand times, and parsing YAML with line
# numbers costs ~20 ms a time. ``ModbusProfile`` is frozen, so sharing it is safe;
# an edited file is read again.
_CACHE: dict[tuple[Path, int, int], ModbusProfile] = {}


def load_profile(reference: str) -> ModbusProfile:
    """Read and validate a profile; ``ProfileError`` names the file, line and key."""
    path = profile_path(reference)
    try:
        stat = path.resolve().stat()
    except OSError:
        key = None
    else:
        key = (path.resolve(), stat.st_mtime_ns, stat.st_size)
        if key in _CACHE:
            return _CACHE[key]
    profile = _read_profile(reference, path)
    if key is not None:
        _CACHE[key] = profile
    return profile


def _read_profile(reference: str, path: Path) -> ModbusProfile:
    where = f"profile {reference!r} ({path})"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(available_profiles()) or "none"
        raise ProfileError(f"{where}: file not found (shipped profiles: {known})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{where}: cannot read: {exc}") from None
    try:
        root = YAML(typ="rt").load(text)
    except YAMLError as exc:
        raise ProfileError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(root, dict):
        raise ProfileError(f"{where}: expected a mapping with a fields: list")
    document = ConfigDocument(path, root)
    try:
        return document.validate(ModbusProfile, _plain(root))
    except ConfigError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        raise ProfileError(f"{where}: {problems}") from None
