"""citylake: a smart-city edge data lake.

The top-level rooms of the repository (ingest/, pipelines/, lake/, services/,
schemas/) are this package's subpackages (citylake/<room> links to ../<room>),
so there is one import namespace and one installable distribution.
"""

__version__ = "0.1.0"
