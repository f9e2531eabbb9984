"""The scale run's report: samples in, plots + CSV + one HTML page out.

Its own room: it knows the ``RunRecord`` file format and nothing of how the
run was orchestrated (``citylake_devstack.scale``) or shown (``citylake.cli``).
Imports only matplotlib and the standard library.
"""

from citylake_devstack.scalereport.build import Report, build_report, rebuild_report
from citylake_devstack.scalereport.record import Marker, ProcessStat, Query, RunInfo, RunRecord, Sample
from citylake_devstack.scalereport.summary import Summary, summarize

__all__ = [
    "Marker",
    "ProcessStat",
    "Query",
    "Report",
    "RunInfo",
    "RunRecord",
    "Sample",
    "Summary",
    "build_report",
    "rebuild_report",
    "summarize",
]
