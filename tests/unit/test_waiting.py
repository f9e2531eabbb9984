"""The tests' awaited wait: returns once true, else fails saying what never happened."""

from __future__ import annotations

import pytest

from tests.waiting import wait_until


async def test_returns_once_the_condition_holds() -> None:
    calls = 0

    def third_call() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    await wait_until(third_call, 5, "three calls", poll_s=0.01)
    assert calls == 3


async def test_fails_naming_what_never_happened_and_the_state() -> None:
    with pytest.raises(AssertionError, match=r"^no answer after 0.05 s; \{'asked': 1\}$"):
        await wait_until(lambda: False, 0.05, "answer", state=lambda: {"asked": 1})


async def test_without_a_name_the_condition_is_quoted() -> None:
    landed: list[int] = []
    with pytest.raises(AssertionError, match=r"never true: .*lambda: len\(landed\) == 1"):
        await wait_until(lambda: len(landed) == 1, 0.05)
