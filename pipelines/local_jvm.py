"""The JVM a local (mini-cluster) job runs in, sized by the config.

PyFlink starts its gateway JVM, which hosts the whole mini-cluster, with the
options in ``JVM_ARGS``. Left alone that JVM takes a quarter of the machine's
memory as its heap ceiling and grows towards it: two streaming jobs reached
4.2 and 3.9 GB resident in the soak at 8k readings/s (bench/soak.py), on a
site whose edge node has 4 GB for everything."""

from __future__ import annotations

import os

from citylake.config import FlinkConfig

# Off-heap beside the heap: class metadata and the network buffers' direct memory.
METASPACE_MB = 256
DIRECT_MB = 256


def local_jvm_args(flink: FlinkConfig) -> str | None:
    if flink.local_heap_mb is None:
        return None
    return (
        f"-Xmx{flink.local_heap_mb}m -XX:MaxMetaspaceSize={METASPACE_MB}m "
        f"-XX:MaxDirectMemorySize={DIRECT_MB}m"
    )


def size_local_jvm(flink: FlinkConfig) -> None:
    """Before the first PyFlink call; JVM_ARGS set by the operator wins."""
    args = local_jvm_args(flink)
    if args is not None and "JVM_ARGS" not in os.environ:
        os.environ["JVM_ARGS"] = args
