"""Configured values in a job's SQL: templates filled with literals.

Operators write rule names, metrics, messages and device prefixes in
``city.yaml``; only names are restricted to a safe alphabet, so every value
reaches Flink's parser as a literal, never as SQL text.
"""

from __future__ import annotations

import math
import re

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def literal(value: str | float | None) -> str:
    """A Flink SQL literal of ``value``.

    Strings are quoted with inner quotes doubled, which is the only escape
    Flink SQL knows (a backslash is an ordinary character, ``--`` inside
    quotes is not a comment). Numbers are Python's float repr, the shortest
    text that reads back as the same double; Flink has no literal for
    infinity or NaN, and a bound there would be a configuration mistake."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        raise TypeError("booleans have no place in a rule; expected a number or text")
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return repr(number)
    return "'" + value.replace("'", "''") + "'"


def render(template: str, **fragments: str) -> str:
    """``template`` with each ``{name}`` replaced by ``fragments[name]``.

    One pass over the template: a fragment is never searched for placeholders
    itself, so a value holding ``{x}`` stays as it is. A placeholder without a
    fragment, or a fragment without a placeholder, is a bug in the job."""
    wanted = set(_PLACEHOLDER.findall(template))
    if wanted != set(fragments):
        missing = ", ".join(sorted(wanted - set(fragments))) or "none"
        unused = ", ".join(sorted(set(fragments) - wanted)) or "none"
        raise KeyError(f"template placeholders and values differ (missing: {missing}; unused: {unused})")
    return _PLACEHOLDER.sub(lambda match: fragments[match.group(1)], template)
