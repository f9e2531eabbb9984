"""Closed by default: a server bound off loopback without credentials refuses to start.

Used by ``citylake serve`` and ``citylake sync serve`` before they bind, so an
operator who copies ``host: 0.0.0.0`` into city.yaml and forgets the keys gets
a refusal that says what to do, not an open API on the site's network.
"""

from __future__ import annotations

import ipaddress


class OpenBindRefused(ValueError):
    """A server would listen off loopback without any credentials."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_exposure(what: str, host: str, protected: bool, allow_open: bool, how_to_protect: str) -> None:
    """Raise ``OpenBindRefused`` if ``what`` would serve ``host`` (off loopback) unprotected."""
    if protected or allow_open or is_loopback(host):
        return
    raise OpenBindRefused(
        f"{what} would listen on {host} without keys: anyone who reaches this address could use it. "
        f"Set {how_to_protect}, or bind 127.0.0.1, or - if the network in front of it really is "
        "trusted - say so with allow_open: true (or --allow-open)."
    )
