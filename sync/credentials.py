"""Per-site sync credentials: a key belongs to one edge site and opens only that site.

The region reads them from ``sync.site_keys`` and ``sync.keys_file``
(``<site> <key>`` per line, a Kubernetes Secret mounted as a file); an edge
sends its own from ``sync.api_key`` or ``sync.api_key_file``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

from citylake.config.loader import unexpanded
from citylake.config.models import SyncConfig
from citylake.sync.names import InvalidName, check_site

MIN_KEY_CHARS = 16


class CredentialsError(ValueError):
    """A keys file that cannot be read or has a malformed line."""


@dataclass(frozen=True)
class SiteKeys:
    pairs: tuple[tuple[str, bytes], ...] = ()

    @property
    def open(self) -> bool:
        return not self.pairs

    def sites_of(self, given: str | None) -> frozenset[str]:
        """The sites ``given`` is a key of (empty: no key matched)."""
        key = (given or "").encode()
        # compare_digest against every key, no early exit: timing tells nothing.
        return frozenset([site for site, candidate in self.pairs if hmac.compare_digest(key, candidate)])


def _read_keys_file(path: Path) -> list[tuple[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialsError(f"cannot read sync.keys_file {path}: {exc.strerror}") from None
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        site, _, key = line.partition(" ")
        key = key.strip()
        try:
            check_site(site)
        except InvalidName as exc:
            raise CredentialsError(f"{path}:{number}: {exc}") from None
        if len(key) < MIN_KEY_CHARS or " " in key:
            raise CredentialsError(
                f"{path}:{number}: expected `<site> <key>`, the key at least {MIN_KEY_CHARS} characters "
                "without spaces"
            )
        found.append((site, key))
    return found


def region_keys(config: SyncConfig) -> SiteKeys:
    pairs = [(site, key) for site, keys in config.site_keys.items() for key in keys]
    for site, key in pairs:
        if unexpanded(key) or not key:
            raise CredentialsError(f"sync.site_keys.{site} has the key {key!r}: set its environment variable")
    if config.keys_file is not None:
        pairs += _read_keys_file(config.keys_file)
    return SiteKeys(tuple((site, key.encode()) for site, key in pairs))


def edge_key(config: SyncConfig) -> str | None:
    if config.api_key_file is None:
        if config.api_key is not None and unexpanded(config.api_key):
            raise CredentialsError(f"sync.api_key is {config.api_key!r}: set its environment variable")
        return config.api_key
    try:
        key = config.api_key_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CredentialsError(
            f"cannot read sync.api_key_file {config.api_key_file}: {exc.strerror}"
        ) from None
    if not key:
        raise CredentialsError(f"sync.api_key_file {config.api_key_file} is empty")
    return key
