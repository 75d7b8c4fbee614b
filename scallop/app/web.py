"""The operator screen: a FastAPI app over a :class:`scallop.app.line_api.LineAPI`, and a server thread.

::

    app = create_app(line, UserStore.simulator_defaults())
    server = serve(app, "127.0.0.1", 8080)      # uvicorn in a thread
    ...
    server.stop()                               # closes live streams, joins the thread

The page (``scallop/app/web/``: plain HTML, CSS and JS, no build step) gets the line's state as
server-sent events from ``/api/events`` and fetches the newest annotated camera frame from
``/api/frame.jpg`` whenever the frame counter moves. JSON API (all errors are
``{"error": "<plain words>"}`` with the status code that fits):

==========================  ==========  ================================================
endpoint                    login       notes
==========================  ==========  ================================================
GET  /api/state             none        line snapshot + who is logged in on this browser
GET  /api/events            none        server-sent events, ``event: state`` ~4 per second
GET  /api/frame.jpg         none        404 until the line has a frame
GET  /api/recipes           none
POST /api/login             none        ``{"pin": "1234"}`` (+ optional ``"user"``) → cookie + token
POST /api/logout            none
POST /api/estop             none        stopping must never wait for a login
POST /api/start|pause|stop  operator    409 when the line refuses in its state
POST /api/reset             operator
POST /api/alarms/{id}/ack   operator    404 for an unknown alarm
POST /api/recipe            operator    ``{"name": "M"}``; 404 unknown, 409 not now
GET  /api/config            engineer
POST /api/config            engineer    ``{"changes": {"vision.KEY": value}}``; 422 names a bad key
GET  /metrics               none        Prometheus text: the line's metrics + the web server's
==========================  ==========  ================================================

Status codes: 400 malformed JSON, 401 not logged in / wrong PIN, 403 role too low or a
cross-site request, 404 unknown thing, 409 not allowed in the line's state, 413 body too
large, 415 not JSON, 422 wrong types or values, 429 PIN pad locked after wrong PINs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from scallop.app.auth import (
    AuthError,
    Forbidden,
    LockedOut,
    Session,
    SessionStore,
    UserStore,
)
from scallop.app.line_api import LineAPI
from scallop.app.metrics import CONTENT_TYPE, WithoutCreated, render
from scallop.errors import DeviceError

STATIC_DIR = Path(__file__).with_name("web")
COOKIE = "scallop_session"
OPERATOR_ACTIONS = ("start", "pause", "stop", "reset")

AuditFn = Callable[[str, str, dict], Any]
"""``audit(kind, user, detail)``: e.g. :meth:`scallop.app.record.RecordWriter.event`."""


class WebError(DeviceError):
    """The screen cannot be served (address in use, server did not start); the message says why."""


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (browsers' JSON.parse refuses them), tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def snapshot_dict(snap) -> dict:
    """A :class:`LineSnapshot` as the page reads it, plus ``unacked_critical``."""
    d = _clean(dataclasses.asdict(snap))
    d["unacked_critical"] = any(a.severity == "critical" and not a.acked for a in snap.alarms)
    return d


def _key_message(e: KeyError) -> str:
    return str(e.args[0]) if e.args else "not found"


class _WebMetrics:
    def __init__(self) -> None:
        # Its own registry: each app counts for itself, and tests create many apps in one process.
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "scallop_web_requests_total", "HTTP requests served.", ("method", "route", "status"), registry=r
        )
        self.seconds = Histogram(
            "scallop_web_request_seconds",
            "Time to answer an HTTP request (streams excluded).",
            ("route",),
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
            registry=r,
        )
        self.clients = Gauge("scallop_web_event_clients", "Screens connected to the live event stream.", registry=r)
        self.logins = Counter("scallop_web_logins_total", "Login attempts.", ("outcome",), registry=r)
        self.line_ok = Gauge("scallop_web_line_metrics_ok", "1 when the line answered for its metrics.", registry=r)

    def render(self) -> str:
        return render(WithoutCreated(self.registry))


_ROUTES = (
    "/",
    "/api/state",
    "/api/events",
    "/api/frame.jpg",
    "/api/recipes",
    "/api/recipe",
    "/api/login",
    "/api/logout",
    "/api/config",
    "/metrics",
    "/api/estop",
) + tuple(f"/api/{a}" for a in OPERATOR_ACTIONS)


def _route_label(path: str) -> str:
    if path in _ROUTES:
        return path
    if path.startswith("/static/"):
        return "/static"
    if path.startswith("/api/alarms/") and path.endswith("/ack"):
        return "/api/alarms/{id}/ack"
    return "other"


class _Guard:
    """ASGI middleware: refuses cross-site writes and counts every request for /metrics."""

    def __init__(self, app, metrics: _WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, route = scope["method"], _route_label(scope["path"])
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        if method not in ("GET", "HEAD", "OPTIONS"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            origin = headers.get("origin")
            # A page from another site may make the browser POST here; the session cookie is
            # SameSite=Strict already, this also stops token-less scripts on other origins.
            if origin and origin != "null" and urlsplit(origin).netloc != headers.get("host", ""):
                resp = JSONResponse({"error": f"cross-site request from {origin} refused"}, status_code=403)
                await resp(scope, receive, send_wrapper)
                self.metrics.requests.labels(method, route, "403").inc()
                return
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(method, route, str(status["code"])).inc()
            if route != "/api/events":
                self.metrics.seconds.labels(route).observe(time.perf_counter() - t0)


def create_app(
    line: LineAPI,
    users: UserStore,
    *,
    sessions: SessionStore | None = None,
    audit: AuditFn | None = None,
    event_interval_s: float = 0.25,
    keepalive_s: float = 15.0,
    max_body_bytes: int = 64 * 1024,
    title: str = "Scallop line",
) -> FastAPI:
    """The operator screen's app for ``line``. ``users`` decides who may log in; ``sessions``
    (optional) sets timeouts and the clock; ``audit(kind, user, detail)`` hears logins."""
    if not (STATIC_DIR / "index.html").is_file():
        raise WebError(f"{STATIC_DIR}: the screen's files are missing from this install")
    if not 0.01 <= event_interval_s <= 10:
        raise ValueError(f"event_interval_s={event_interval_s} is out of range: allowed 0.01..10")
    sessions = sessions or SessionStore(users)
    metrics = _WebMetrics()
    closing = threading.Event()

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.line = line
    app.state.sessions = sessions
    app.state.closing = closing
    app.state.metrics = metrics
    app.add_middleware(_Guard, metrics=metrics)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def _audit(kind: str, user: str, detail: dict | None = None) -> None:
        if audit is not None:
            try:
                audit(kind, user, detail or {})
            except Exception:
                pass  # the audit trail failing must not block the operator

    # -- errors: always {"error": "..."}

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)

    @app.exception_handler(LockedOut)
    async def _locked(request: Request, e: LockedOut):
        return JSONResponse(
            {"error": str(e)}, status_code=429, headers={"Retry-After": str(math.ceil(e.retry_after_s))}
        )

    @app.exception_handler(AuthError)
    async def _auth(request: Request, e: AuthError):
        return JSONResponse({"error": str(e)}, status_code=401)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, e: Forbidden):
        return JSONResponse({"error": str(e)}, status_code=403)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        msg = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        if e.status_code == 404 and msg == "Not Found":
            msg = f"no such page: {request.url.path}"
        elif e.status_code == 405:
            msg = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse({"error": msg}, status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        # The page shows this text; a runtime that crashed must say so, not return HTML.
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "path", "query"))
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return JSONResponse({"error": "; ".join(parts) or "invalid request"}, status_code=422)

    # -- helpers

    def _token(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.cookies.get(COOKIE)

    def _require(request: Request, role: str) -> Session:
        return sessions.require(_token(request), role)

    async def _body(request: Request, required: bool = True) -> dict:
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise ApiError(413, f"request body of {len(raw)} bytes is too large: at most {max_body_bytes}")
        if not raw.strip():
            if required:
                raise ApiError(400, "expected a JSON object in the request body")
            return {}
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, f"send JSON (Content-Type: application/json), not {ctype or 'no content type'}")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"malformed JSON: {e}") from None
        if not isinstance(data, dict):
            raise ApiError(
                422, f"expected a JSON object, got {type(data).__name__ if not isinstance(data, list) else 'a list'}"
            )
        return data

    async def _call(fn: Callable, *args: Any) -> Any:
        try:
            return await run_in_threadpool(fn, *args)
        except KeyError as e:
            raise ApiError(404, _key_message(e)) from None
        except RuntimeError as e:
            raise ApiError(409, str(e) or "not allowed in the line's current state") from None
        except (ValueError, TypeError) as e:
            raise ApiError(422, str(e)) from None

    # -- pages

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/state")
    async def state(request: Request):
        snap = await run_in_threadpool(line.snapshot)
        s = sessions.get(_token(request))
        d = snapshot_dict(snap)
        d["session"] = {"user": s.user, "role": s.role} if s else None
        d["server_time"] = time.time()
        return JSONResponse(d)

    @app.get("/api/events")
    async def events(request: Request):
        async def stream():
            metrics.clients.inc()
            try:
                yield "retry: 1000\n\n"  # reconnect fast after a server restart
                last, last_sent = None, 0.0
                while not closing.is_set():
                    if await request.is_disconnected():
                        break
                    try:
                        snap = await run_in_threadpool(line.snapshot)
                        payload = json.dumps(snapshot_dict(snap), separators=(",", ":"))
                    except Exception as e:  # tell the screen rather than drop the stream
                        payload = json.dumps({"error": f"line not answering: {e}"})
                    now = time.monotonic()
                    if payload != last:
                        yield f"event: state\ndata: {payload}\n\n"
                        last, last_sent = payload, now
                    elif now - last_sent > keepalive_s:
                        yield ": keepalive\n\n"
                        last_sent = now
                    await asyncio.sleep(event_interval_s)
            finally:
                metrics.clients.dec()

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    @app.get("/api/frame.jpg")
    async def frame():
        jpeg = await run_in_threadpool(line.latest_jpeg)
        if not jpeg:
            raise ApiError(404, "no camera frame yet")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/metrics")
    async def prometheus():
        try:
            text = await run_in_threadpool(line.metrics_text)
            metrics.line_ok.set(1)
        except Exception:
            text = ""
            metrics.line_ok.set(0)
        if text and not text.endswith("\n"):
            text += "\n"
        return Response(text + metrics.render(), media_type=CONTENT_TYPE)

    # -- login

    @app.post("/api/login")
    async def login(request: Request):
        data = await _body(request)
        pin, name = data.get("pin"), data.get("user")
        if not isinstance(pin, str):
            raise ApiError(422, f'pin={pin!r}: expected a string of 4 to 8 digits, like "1234"')
        if name is not None and not isinstance(name, str):
            raise ApiError(422, f"user={name!r}: expected a string")
        unknown = set(data) - {"pin", "user"}
        if unknown:
            raise ApiError(422, f"unknown field(s) {', '.join(sorted(unknown))}: send pin (and optionally user)")
        try:
            s = await run_in_threadpool(sessions.login, pin, name)
        except AuthError:
            metrics.logins.labels("refused").inc()
            _audit("login_refused", name or "", {})
            raise
        metrics.logins.labels("ok").inc()
        _audit("login", s.user, {"role": s.role})
        resp = JSONResponse({"user": s.user, "role": s.role, "token": s.token})
        resp.set_cookie(COOKIE, s.token, httponly=True, samesite="strict", path="/")
        return resp

    @app.post("/api/logout")
    async def logout(request: Request):
        tok = _token(request)
        s = sessions.get(tok)
        if tok:
            sessions.logout(tok)
        if s:
            _audit("logout", s.user, {})
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # -- control

    @app.post("/api/estop")
    async def estop(request: Request):
        s = sessions.get(_token(request))
        user = s.user if s else "screen"
        await _call(line.estop, user)
        snap = await run_in_threadpool(line.snapshot)
        return {"ok": True, "state": snap.state}

    def _make_action(action: str):
        async def act(request: Request):
            s = _require(request, "operator")
            await _call(getattr(line, action), s.user)
            snap = await run_in_threadpool(line.snapshot)
            return {"ok": True, "state": snap.state}

        act.__name__ = f"action_{action}"
        return act

    for action in OPERATOR_ACTIONS:
        app.post(f"/api/{action}")(_make_action(action))

    @app.post("/api/alarms/{alarm_id}/ack")
    async def ack(alarm_id: str, request: Request):
        s = _require(request, "operator")
        try:
            aid = int(alarm_id)
        except ValueError:
            raise ApiError(422, f"alarm id {alarm_id!r} is not a number") from None
        snap = await run_in_threadpool(line.snapshot)
        if not any(a.id == aid for a in snap.alarms):
            raise ApiError(404, f"no alarm {aid} on the line")
        await _call(line.ack_alarm, aid, s.user)
        return {"ok": True, "alarm": aid}

    # -- recipes and configuration

    @app.get("/api/recipes")
    async def recipes():
        rs = await run_in_threadpool(line.recipes)
        snap = await run_in_threadpool(line.snapshot)
        return {"recipes": [_clean(dataclasses.asdict(r)) for r in rs], "current": snap.recipe}

    @app.post("/api/recipe")
    async def recipe(request: Request):
        s = _require(request, "operator")
        data = await _body(request)
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(422, f"name={name!r}: expected the recipe's name as a string")
        known = [r.name for r in await run_in_threadpool(line.recipes)]
        if name not in known:
            raise ApiError(404, f"unknown recipe {name!r}: choose one of {', '.join(known)}")
        await _call(line.select_recipe, name, s.user)
        return {"ok": True, "recipe": name}

    @app.get("/api/config")
    async def config_get(request: Request):
        _require(request, "engineer")
        return JSONResponse(_clean(await _call(line.config_view)))

    @app.post("/api/config")
    async def config_post(request: Request):
        s = _require(request, "engineer")
        data = await _body(request)
        changes = data.get("changes")
        if set(data) != {"changes"} or not isinstance(changes, dict) or not changes:
            raise ApiError(422, 'expected {"changes": {"key": value, ...}} with at least one change')
        result = await _call(line.update_config, changes, s.user)
        _audit("config", s.user, {"changes": changes})
        return JSONResponse({"ok": True, "config": _clean(result)})

    return app


# ---------------------------------------------------------------------------- server thread


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
    ) -> None:
        import uvicorn

        self.app = app
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
        self._sock = sock
        self.host = host
        self.port = sock.getsockname()[1]
        # Streams end on their own once `closing` is set; the grace timeout only bounds a stuck client.
        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off", timeout_graceful_shutdown=3)
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
        return f"http://{host}:{self.port}"

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
    """Start serving ``app`` in a thread and return once it accepts connections (port 0: any free port)."""
    return WebServer(app, host, port, **kw)
