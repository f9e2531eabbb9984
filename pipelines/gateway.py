"""PyFlink's gateway JVM, started again when it has gone.

PyFlink keeps one gateway JVM per Python process (it hosts every local
mini-cluster the process runs) and caches it for good. When that JVM exits,
e.g. its watchdog, which pings the Python side every 10 s, gave up on a
machine under load, or a process killed it, every later PyFlink call fails
with "Answer from Java side is empty" or "EnvironmentSettings does not exist
in the JVM", and a long-lived process (a test session, the alerts job
re-planning in place) could never plan a job again. A gateway that does not
answer is dropped here, so the next PyFlink call launches a new one.
"""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger(__name__)


def ensure_live_gateway() -> bool:
    """True if a cached gateway was dead and has been dropped."""
    from pyflink import java_gateway

    with java_gateway._lock:
        gateway = java_gateway._gateway
        if gateway is None:
            return False
        try:
            gateway.jvm.java.lang.System.currentTimeMillis()
            return False
        except Exception as exc:  # Py4J's network errors, whatever their class
            log.warning("PyFlink's gateway JVM is gone (%s); starting a new one", type(exc).__name__)
            with contextlib.suppress(Exception):
                gateway.shutdown_callback_server()
            java_gateway._gateway = None
            return True
