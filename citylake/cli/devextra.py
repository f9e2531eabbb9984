"""The dev commands' guard: ``simulate``, ``scale`` and ``demo`` load their dev
code (citylake.devstack, citylake.scalereport, the simulators) inside the
command, never when ``citylake.cli`` is imported, so a product install
(``pip install -c constraints.txt citylake``, deploy/Dockerfile) runs every
product command without the ``dev`` extra. When a dev command's import needs a
package only the extra installs, the user is told which and how to get it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.markup import escape

from citylake.cli.common import fail

DEV_EXTRA_HINT = "pip install -c constraints.txt 'citylake[dev]' (in a checkout: make setup)"


@contextmanager
def dev_extra(command: str) -> Iterator[None]:
    """Wrap a dev command's imports: a missing module ends the command with
    exit 2 naming the module and the install that provides it."""
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        if missing.startswith("citylake"):
            raise  # a broken install of citylake itself, not a missing extra
        # escape: fail() prints rich markup, which would eat "[dev]".
        fail(
            escape(
                f"`citylake {command}` is a development command and needs the dev extra "
                f"({missing} is not installed): {DEV_EXTRA_HINT}"
            ),
            code=2,
        )
