"""The 100k-device scale run (issue 7): the whole stack on one machine under a
city's load, sampled every few seconds into a ``RunRecord`` that
``citylake_devstack.scalereport`` turns into plots and a one-page summary.

    plan.py    what is simulated (devices per protocol, rates) and the city.yaml for it
    fleet.py   MQTT sensors at city rates, as a child process
    load.py    freshness markers and the query load generator (threads)
    probes.py  /proc process trees, Prometheus endpoints, landing zone and lake watchers
    run.py     ScaleRun: start in order, warm up, load, sample, stop and check nothing is left
    edgebox.py the edge in a box: a cgroup v1 of the edge node's size the edge's processes run in
    edge_settings.py  the edge overlay's settings (deploy/) a run in the box is configured with
"""

from citylake_devstack.scale.plan import ALL_JOBS, DEFAULT_JOBS, ScalePlan, split_devices
from citylake_devstack.scale.run import ScaleRun

__all__ = ["ALL_JOBS", "DEFAULT_JOBS", "ScalePlan", "ScaleRun", "split_devices"]
