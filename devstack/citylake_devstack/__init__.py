"""Starting real components (mosquitto, daprd, Flink, citylake's own processes)
on free local ports: shared by ``citylake demo`` and the test fixtures."""

# From the repository root the folder is also reachable as the namespace
# package devstack.citylake_devstack: one name only, as for the rooms.
if __name__ != "citylake_devstack":
    raise ImportError(f"import citylake_devstack, not {__name__}: the test bench has one import name")


from citylake_devstack.components import (
    Daprd,
    Mosquitto,
    start_daprd,
    start_mosquitto,
    start_service,
)
from citylake_devstack.process import ComponentUnavailable, ManagedProcess, free_port, port_open

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
