"""Telling systemd how the line is: ready, alive, stopping (``Type=notify``, ``WatchdogSec``).

The protocol is one datagram to the socket named in ``$NOTIFY_SOCKET`` (sd_notify(3)); a few
lines here instead of the ``systemd`` Python binding, which needs libsystemd's headers to
build on the line PC. Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(*fields: str) -> bool:
    """Send ``fields`` (``READY=1``, ``WATCHDOG=1``, ``STATUS=…``, ``STOPPING=1``); False when
    not under systemd or the message could not be sent (never raises: the line goes on)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # an abstract socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(fields).encode())
        return True
    except OSError:
        return False


def watchdog_interval_s() -> float | None:
    """How often to ping the watchdog: half of ``$WATCHDOG_USEC`` (None when there is no
    watchdog for this process)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 2e6)
    except ValueError:
        return None
