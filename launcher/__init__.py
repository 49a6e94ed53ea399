"""Native process launcher: every service of a topology and the gateway on 127.0.0.1.

No Docker: each process is a child of the launcher with a known pid, its own log file and,
for a service, its own database. ``python -m launcher up`` is what ``make up-services``
runs; :class:`Launcher` is the same thing as a Python API for the system tests.
"""

from launcher.core import (
    GATEWAY,
    Launcher,
    LauncherError,
    ProcessInfo,
    Timeouts,
    start_on_free_ports,
)
from launcher.processes import log_tail

__all__ = [
    "GATEWAY",
    "Launcher",
    "LauncherError",
    "ProcessInfo",
    "Timeouts",
    "log_tail",
    "start_on_free_ports",
]
