"""The systemd notify protocol (sd_notify(3)), without a dependency.

systemd passes ``NOTIFY_SOCKET`` to a ``Type=notify`` service: a datagram socket (a path,
or an abstract-namespace name when it starts with ``@``) to which the service sends
newline-separated ``KEY=VALUE`` assignments:

    READY=1        start-up finished (systemctl start returns)
    STATUS=...     one line shown by systemctl status
    WATCHDOG=1     "the main loop is alive"; missing for WatchdogSec -> restart
    STOPPING=1     shutdown began (the current job is being finished)

``WATCHDOG_USEC`` carries WatchdogSec in microseconds; pinging at half of it is the
documented safe rate. ``WATCHDOG_PID``, when set, names the process meant to ping, so a
child process that inherited the environment stays silent.

Without ``NOTIFY_SOCKET`` (a terminal, cron, tests) every call is a cheap no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self.last_error: str | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; False when not under systemd or it failed.

        A notify failure must never take the daemon down (systemd may be restarting, the
        socket may have gone away); the reason is kept in ``last_error`` for the caller.
        """
        if self.address is None or not fields:
            return False
        payload = "\n".join(f"{k}={_one_line(v)}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, self.address)
        except OSError as e:
            self.last_error = f"{type(e).__name__}: {e}"
            self.close()
            return False
        self.last_error = None
        return True

    def ready(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"READY": 1}
        if status:
            fields["STATUS"] = status
        fields["MAINPID"] = os.getpid()
        return self.send(**fields)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        if self.watchdog_interval is None:
            return False
        return self.send(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"STOPPING": 1}
        if status:
            fields["STATUS"] = status
        return self.send(**fields)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        # abstract namespace: a leading NUL byte instead of the '@'
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other transports are not used by systemd for services


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return usec / 1_000_000 / 2


def _one_line(value: str | int) -> str:
    return " ".join(str(value).split())
