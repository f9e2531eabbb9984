"""The PyFlink jobs: landing into the lake, stream and batch (pipelines/README.md).

Floor 4: imports lake/, ingest/, schemas/ and config.
"""

# The room is reached through the link citylake/pipelines; imported as plain
# `pipelines` (from the repository root) every module would exist twice, with two
# sets of classes and Prometheus collectors.
if __name__ != "citylake.pipelines":
    raise ImportError(f"import citylake.pipelines, not {__name__}: the rooms have one import name")
