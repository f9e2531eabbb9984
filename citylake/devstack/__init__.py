"""Starting real components (mosquitto, daprd, Flink, citylake's own processes)
on free local ports: shared by ``citylake demo`` and the test fixtures."""

from citylake.devstack.components import (
    Daprd,
    Mosquitto,
    start_daprd,
    start_mosquitto,
    start_service,
)
from citylake.devstack.process import ComponentUnavailable, ManagedProcess, free_port, port_open

__all__ = [
    "ComponentUnavailable",
    "Daprd",
    "ManagedProcess",
    "Mosquitto",
    "free_port",
    "port_open",
    "start_daprd",
    "start_mosquitto",
    "start_service",
]
