"""PyFlink's gateway JVM, started again when it has gone.

PyFlink keeps one gateway JVM per Python process (it hosts every local
mini-cluster the process runs) and caches it for good. When that JVM exits,
e.g. its watchdog, which pings the Python side every 10 s, gave up on a
machine under load, or a process killed it, every later PyFlink call fails
with "Answer from Java side is empty" or "EnvironmentSettings does not exist
in the JVM", and a long-lived process (a test session, the alerts job
re-planning in place) could never plan a job again. A gateway that does not
answer is dropped here, so the next PyFlink call launches a new one.

Its object proxies are let go with it: each one that the garbage collector
finalises later would otherwise try to reach the dead JVM and log a
connection error with its traceback, from whatever code the collector
happened to interrupt (on CPython 3.11.7, formatting that traceback inside
an ``ast.parse`` trips the parser's shared recursion counter, gh-106905).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

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
            forget_proxies_of(gateway)
            return True


def forget_proxies_of(gateway: Any) -> None:
    """Unregisters the finalizers of a dead gateway's object proxies, so none
    of them calls the JVM when it is collected (Py4J keys each by the
    gateway's address and port, then the object id)."""
    from py4j.finalizer import ThreadSafeFinalizer

    client = gateway._gateway_client
    prefix = f"{client.address}{client.port}"

    def of_this_gateway(key: object) -> bool:
        # Object ids start with a letter ("o12"), so port 3797 is not 37971.
        rest = str(key)[len(prefix) :] if str(key).startswith(prefix) else ""
        return rest[:1].isalpha()

    with ThreadSafeFinalizer.lock:
        for key in [k for k in ThreadSafeFinalizer.finalizers if of_this_gateway(k)]:
            ThreadSafeFinalizer.finalizers.pop(key, None)
