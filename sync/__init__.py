"""Edge → region sync: an edge ships its lake to its region over HTTP.

Floor 4: imports lake/, schemas/ and the config models; imported by the CLI.
"""

# The room is reached through the link citylake/sync; imported as plain
# `sync` (from the repository root) every module would exist twice, with two
# sets of classes and Prometheus collectors.
if __name__ != "citylake.sync":
    raise ImportError(f"import citylake.sync, not {__name__}: the rooms have one import name")
