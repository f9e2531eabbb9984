"""A local job's JVM is sized by pipelines.flink.local_heap_mb."""

from __future__ import annotations

import os

import pytest

from citylake.config import FlinkConfig
from citylake.pipelines.local_jvm import local_jvm_args, size_local_jvm


def test_the_heap_comes_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JVM_ARGS", raising=False)
    size_local_jvm(FlinkConfig(local_heap_mb=640))
    assert os.environ["JVM_ARGS"].split()[0] == "-Xmx640m"
    assert "-XX:MaxDirectMemorySize=256m" in os.environ["JVM_ARGS"]


def test_the_operators_jvm_args_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JVM_ARGS", "-Xmx3g")
    size_local_jvm(FlinkConfig(local_heap_mb=640))
    assert os.environ["JVM_ARGS"] == "-Xmx3g"


def test_unset_leaves_the_jvm_default() -> None:
    assert local_jvm_args(FlinkConfig(local_heap_mb=None)) is None
    with pytest.raises(ValueError, match="local_heap_mb"):
        FlinkConfig(local_heap_mb=64)
