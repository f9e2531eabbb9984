"""The dashboard: a page served at ``/dashboard`` (``page.py``) and the JSON
routes under ``/v1/dashboard/`` it reads besides the latest-value routes
(``api.py``)."""

from citylake.services.query.dashboard.api import router
from citylake.services.query.dashboard.page import page_router

__all__ = ["page_router", "router"]
