"""The operator screen's server: uvicorn serving the app of :func:`scallop.app.web.create_app`
from a background thread (TLS when given a certificate and its key), started and stopped by the
line program (``serve(app, host, port)`` … ``server.stop()``)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from scallop.errors import DeviceError


class WebError(DeviceError):
    """The screen cannot be served (address in use, server did not start); the message says why."""


def bind(host: str, port: int) -> socket.socket:
    """Take the screen's address now (port 0: any free one). The line program does so before
    it opens any device: a start refused because the port is in use must not have moved an
    arm first (an outside try found its arm left in watchdog fault by such a start)."""
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise WebError(f"cannot serve on {host}:{port}: unknown host ({e.strerror})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise WebError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    return sock


class WebServer:
    """uvicorn serving one app from a background thread; ``stop()`` ends streams and joins it."""

    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        log_level: str = "warning",
        start_timeout_s: float = 10.0,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        """``sock``: the address already taken with :func:`bind` (the line program takes it
        before it opens any device)."""
        import uvicorn

        if (certfile is None) != (keyfile is None):
            raise WebError("TLS needs both a certificate and its key ([ui] tls_certfile and tls_keyfile)")
        for what, f in (("certificate", certfile), ("key", keyfile)):
            if f is not None and not Path(f).is_file():
                raise WebError(f"TLS {what} {f}: no such file")
        self.tls = certfile is not None

        self.app = app
        if sock is None:
            sock = bind(host, port)
        self._sock = sock
        self.host = host
        self.port = sock.getsockname()[1]
        # Streams end on their own once `closing` is set; the grace timeout only bounds a stuck client.
        config = uvicorn.Config(
            app,
            log_level=log_level,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
            ssl_certfile=str(certfile) if certfile else None,
            ssl_keyfile=str(keyfile) if keyfile else None,
        )
        if self.tls:
            try:
                config.load()  # reads the certificate and key now, so a bad pair is this call's error
            except Exception as e:
                sock.close()
                raise WebError(f"TLS certificate {certfile} / key {keyfile} cannot be used: {e}") from None
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"web-server:{self.port}", daemon=True)
        self._error: BaseException | None = None
        self._thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                sock.close()
                raise WebError(f"the web server on {host}:{self.port} stopped while starting: {self._error}")
            if time.monotonic() > deadline:
                self.stop()
                raise WebError(f"the web server on {host}:{self.port} did not start within {start_timeout_s} s")
            time.sleep(0.01)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as e:  # SystemExit from uvicorn included: report it, do not kill the process
            self._error = e

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        closing = getattr(self.app.state, "closing", None)
        if closing is not None:
            closing.set()
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        try:
            self._sock.close()
        except OSError:
            pass
        if self._thread.is_alive():
            raise WebError(f"the web server on port {self.port} did not stop within {2 * timeout} s")

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, **kw: Any) -> WebServer:
    """Start serving ``app`` in a thread and return once it accepts connections (port 0: any free
    port; ``certfile=`` and ``keyfile=``: HTTPS)."""
    return WebServer(app, host, port, **kw)
