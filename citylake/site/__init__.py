"""``citylake run``: one site from one ``city.yaml``.

``units`` plans what a tier runs (ingest, the streaming jobs, lake
maintenance, sync, the services and their Dapr sidecars) as child commands;
``supervisor`` starts them, restarts what dies with a doubling backoff, and
stops everything on Ctrl-C; ``health`` serves the one health view. The units
are the same ones deploy/ runs as workloads (deploy/README.md maps them).

Floor 4 beside the CLI: it runs ``citylake <command>`` processes and imports
only the config models.
"""

from citylake.site.supervisor import Supervisor, UnitState
from citylake.site.units import SitePlan, Unit, plan_site

__all__ = ["SitePlan", "Supervisor", "Unit", "UnitState", "plan_site"]
