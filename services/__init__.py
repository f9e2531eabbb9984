"""The FastAPI services behind Dapr sidecars (services/README.md).

Floor 4: imports lake/, ingest/, schemas/ and config.
"""

# The room is reached through the link citylake/services; imported as plain
# `services` (from the repository root) every module would exist twice, with two
# sets of classes and Prometheus collectors.
if __name__ != "citylake.services":
    raise ImportError(f"import citylake.services, not {__name__}: the rooms have one import name")
