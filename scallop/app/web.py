"""The operator screen: a FastAPI app over a :class:`scallop.app.line_api.LineAPI`, and a server thread.

::

    app = create_app(line, UserStore.simulator_defaults(), allowed_hosts=["line3.plant.local"])
    server = serve(app, "127.0.0.1", 8080)      # scallop.app.web_server: uvicorn in a thread
    ...
    server.stop()                               # closes live streams, joins the thread

The page (``scallop/app/web/``: plain HTML, CSS and JS, no build step, texts from the message
catalogues ``web/i18n/<language>.json``) gets the line's state as server-sent events from
``/api/events`` and fetches the newest annotated camera frame from ``/api/frame.jpg`` whenever
the frame counter moves; while the engineer panel is open it reads ``/api/channel`` and, when
the pair counter moves, ``/api/uv.jpg``. JSON API (all errors are ``{"error": "<plain words>"}``,
plus ``code`` and ``params`` naming the message in the catalogue where the screen shows it, with
the status code that fits):

==========================  ==========  ================================================
endpoint                    login       notes
==========================  ==========  ================================================
GET  /api/state             none        line snapshot + who is logged in on this browser
GET  /api/events            none        server-sent events, ``event: state`` ~4 per second
GET  /api/frame.jpg         see notes   ``frame_access``; 404 until the line has a frame
GET  /api/uv.jpg            engineer    the newest fluorescence image as measured; 404 without one
GET  /api/channel           engineer    the fluorescence channel's figures; 404 on a line without one
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
POST /api/capture           engineer    ``{"on": true}`` starts keeping frames for labelling, false stops
POST /api/lot               operator    ``{"lot": "L-0412"}`` the production lot from now on; 422 a bad one
POST /api/shift_check/override engineer ``{"reason": "..."}`` production without a passed shift check
GET  /metrics               see notes   ``metrics_access``; the line's metrics + the web server's
==========================  ==========  ================================================

Every request is treated as hostile (docs/operator-screen.md): a ``Host`` that is not this
screen's (loopback, the address the request came to, ``allowed_hosts``) is refused, so a web
page elsewhere cannot reach the line by DNS rebinding; a state-changing request whose ``Origin``
or ``Sec-Fetch-Site`` says it comes from another site (``Origin: null`` included) is refused, and
so is a cross-site read that is not a navigation (:mod:`scallop.app.web_guard`); a body is refused at ``max_body_bytes`` while
it streams in, and JSON nested deeper than ``max_json_depth``. Every answer carries a CSP
without inline script, ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and, from the
API, ``Cache-Control: no-store``. Under TLS the session cookie is ``Secure``.

Status codes: 400 malformed JSON or a foreign ``Host``, 401 not logged in / wrong PIN, 403 role
too low or a cross-site request, 404 unknown thing, 409 not allowed in the line's state, 413
body too large, 415 not JSON, 422 wrong types or values, 429 PIN pad locked, 503 a device the
line needs is missing; each error kind of :mod:`scallop.errors` has its own (``http_status``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from scallop.app.auth import AuthError, LockedOut, Session, SessionStore, UserStore, is_loopback
from scallop.app.i18n import LANGUAGES
from scallop.app.line_api import LineAPI
from scallop.app.metrics import CONTENT_TYPE
from scallop.app.version import program_version
from scallop.app.web_guard import OPERATOR_ACTIONS, ApiError, RequestGuard, WebMetrics, json_depth_ok
from scallop.app.web_server import WebError
from scallop.errors import ScallopError

STATIC_DIR = Path(__file__).with_name("web")
COOKIE = "scallop_session"
Access = Literal["anyone", "loopback", "login"]
ACCESS: tuple[str, ...] = ("anyone", "loopback", "login")

NO_CHANNEL = "this line has no fluorescence channel ([camera.fluorescence] setup)"

AuditFn = Callable[[str, str, dict], Any]
"""``audit(kind, user, detail)``: e.g. :meth:`scallop.app.record.RecordWriter.event`."""


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


def create_app(
    line: LineAPI,
    users: UserStore,
    *,
    sessions: SessionStore | None = None,
    audit: AuditFn | None = None,
    event_interval_s: float = 0.25,
    keepalive_s: float = 15.0,
    max_body_bytes: int = 64 * 1024,
    max_json_depth: int = 16,
    allowed_hosts: Iterable[str] = (),
    frame_access: Access = "loopback",
    metrics_access: Access = "loopback",
    language: str = "ja",
    title: str = "Scallop line",
) -> FastAPI:
    """The operator screen's app for ``line``. ``users`` decides who may log in; ``sessions``
    (optional) sets timeouts and the clock; ``audit(kind, user, detail)`` hears logins.
    ``allowed_hosts``: names and addresses the screen answers to besides loopback and the
    address a request came to. ``frame_access`` / ``metrics_access``: who may read the camera
    image and /metrics — ``anyone``, ``loopback`` (a login needed from other computers) or
    ``login``. ``language``: the screen's language until a user switches it."""
    if not (STATIC_DIR / "index.html").is_file():
        raise WebError(f"{STATIC_DIR}: the screen's files are missing from this install")
    if not 0.01 <= event_interval_s <= 10:
        raise ValueError(f"event_interval_s={event_interval_s} is out of range: allowed 0.01..10")
    for key, value in (("frame_access", frame_access), ("metrics_access", metrics_access)):
        if value not in ACCESS:
            raise ValueError(f"{key}={value!r} is not allowed: choose one of {', '.join(ACCESS)}")
    if language not in LANGUAGES:
        raise ValueError(f"language={language!r} is not allowed: choose one of {', '.join(LANGUAGES)}")
    sessions = sessions or SessionStore(users)
    metrics = WebMetrics()
    closing = threading.Event()
    hosts = frozenset(h.strip().strip("[]").lower() for h in allowed_hosts if h.strip())
    index_html = (
        (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace('<html lang="en">', f'<html lang="{language}">')
    )

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.line = line
    app.state.sessions = sessions
    app.state.closing = closing
    app.state.metrics = metrics
    app.add_middleware(RequestGuard, metrics=metrics, allowed_hosts=hosts, max_body_bytes=max_body_bytes)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def _audit(kind: str, user: str, detail: dict | None = None) -> None:
        if audit is not None:
            try:
                audit(kind, user, detail or {})
            except Exception:
                pass  # the audit trail failing must not block the operator

    # -- errors: always {"error": "..."}; every error kind maps to its status here, in one place

    def _error(status: int, message: str, code: str = "", params: dict | None = None, headers=None) -> JSONResponse:
        body: dict[str, Any] = {"error": message}
        if code:
            body["code"], body["params"] = code, params or {}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ScallopError)
    async def _scallop_error(request: Request, e: ScallopError):
        headers = dict(getattr(e, "headers", None) or {})
        if isinstance(e, LockedOut):
            headers["Retry-After"] = str(math.ceil(e.retry_after_s))
        return _error(e.http_status, str(e), getattr(e, "code", ""), getattr(e, "params", None), headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        msg = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        if e.status_code == 404 and msg == "Not Found":
            msg = f"no such page: {request.url.path}"
        elif e.status_code == 405:
            msg = f"{request.method} is not allowed on {request.url.path}"
        return _error(e.status_code, msg, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        # The page shows this text; a runtime that crashed must say so, not return HTML.
        return _error(500, f"internal error: {type(e).__name__}: {e}")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "path", "query"))
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return _error(422, "; ".join(parts) or "invalid request")

    # -- helpers

    def _token(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.cookies.get(COOKIE)

    def _require(request: Request, role: str) -> Session:
        return sessions.require(_token(request), role)

    def _client(request: Request) -> str:
        return request.client.host if request.client else ""

    def _may_read(request: Request, access: str) -> None:
        if access == "anyone" or (access == "loopback" and is_loopback(_client(request))):
            return
        _require(request, "operator")

    async def _body(request: Request, required: bool = True) -> dict:
        raw = await request.body()  # the guard has cut it at max_body_bytes
        if not raw.strip():
            if required:
                raise ApiError(400, "expected a JSON object in the request body")
            return {}
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, f"send JSON (Content-Type: application/json), not {ctype or 'no content type'}")
        if not json_depth_ok(raw, max_json_depth):
            raise ApiError(400, f"JSON nested more than {max_json_depth} deep")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"malformed JSON: {e}") from None
        if not isinstance(data, dict):
            raise ApiError(
                422, f"expected a JSON object, got {type(data).__name__ if not isinstance(data, list) else 'a list'}"
            )
        return data

    async def _call(fn: Callable, *args: Any, action: str = "") -> Any:
        try:
            return await run_in_threadpool(fn, *args)
        except ScallopError as e:
            if e.http_status == 409 and action:
                await _not_now(action, str(e))
            raise
        except KeyError as e:
            raise ApiError(404, _key_message(e)) from None
        except RuntimeError as e:
            if action:
                await _not_now(action, str(e))
            raise ApiError(409, str(e) or "not allowed in the line's current state") from None
        except (ValueError, TypeError) as e:
            raise ApiError(422, str(e)) from None

    async def _not_now(action: str, message: str) -> None:
        snap = await run_in_threadpool(line.snapshot)
        raise ApiError(409, message, code="not_now", action=f"#action.{action}", state=f"#state.{snap.state}")

    # -- pages

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(index_html, headers={"Cache-Control": "no-cache"})

    @app.get("/api/state")
    async def state(request: Request):
        snap = await run_in_threadpool(line.snapshot)
        s = sessions.get(_token(request))
        d = snapshot_dict(snap)
        d["session"] = {"user": s.user, "role": s.role} if s else None
        d["server_time"] = time.time()
        d["version"] = program_version()
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

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})

    @app.get("/api/frame.jpg")
    async def frame(request: Request):
        _may_read(request, frame_access)
        jpeg = await run_in_threadpool(line.latest_jpeg)
        if not jpeg:
            raise ApiError(404, "no camera frame yet")
        return Response(jpeg, media_type="image/jpeg")

    # Engineer-only, unlike frame.jpg: the channel's view is a diagnosis (docs/fluorescence.md,
    # "Is the channel healthy?"), nothing an operator acts on.

    @app.get("/api/uv.jpg")
    async def uv_frame(request: Request):
        _require(request, "engineer")
        jpeg = await run_in_threadpool(line.latest_uv_jpeg)
        if not jpeg:
            status = await run_in_threadpool(line.channel_status)
            raise ApiError(404, NO_CHANNEL if status is None else "no fluorescence image yet")
        return Response(jpeg, media_type="image/jpeg")

    @app.get("/api/channel")
    async def channel(request: Request):
        _require(request, "engineer")
        status = await run_in_threadpool(line.channel_status)
        if status is None:
            # 404 like /api/uv.jpg: a client reads one answer for "this line has no channel" from both.
            raise ApiError(404, NO_CHANNEL)
        return JSONResponse(_clean(status))

    @app.get("/metrics")
    async def prometheus(request: Request):
        _may_read(request, metrics_access)
        try:
            text = await run_in_threadpool(line.metrics_text)
            metrics.line_ok.set(1)
        except Exception:
            text = ""
            metrics.line_ok.set(0)
        if text and not text.endswith("\n"):
            text += "\n"
        return Response(text + metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/healthz")
    async def healthz(request: Request):
        """For the plant's monitoring: 200 while the line's loops are alive, 503 when it is
        faulted or a loop stopped going round (the body says which)."""
        _may_read(request, metrics_access)
        try:
            h = await run_in_threadpool(line.health)
        except Exception as e:  # a line that cannot even answer is not healthy
            h = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        body = {"status": "ok" if h.get("ok") else "unhealthy", "version": program_version(), **h}
        return JSONResponse(body, status_code=200 if h.get("ok") else 503, headers={"Cache-Control": "no-store"})

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
        client = _client(request)
        try:
            s = await run_in_threadpool(sessions.login, pin, name, client)
        except LockedOut as e:
            metrics.logins.labels("locked").inc()
            _audit("login_locked", name or "", {"address": client, "retry_after_s": math.ceil(e.retry_after_s)})
            raise
        except AuthError:
            metrics.logins.labels("refused").inc()
            _audit("login_refused", name or "", {"address": client})
            raise
        metrics.logins.labels("ok").inc()
        _audit("login", s.user, {"role": s.role, "address": client})
        resp = JSONResponse({"user": s.user, "role": s.role, "token": s.token})
        resp.set_cookie(
            COOKIE, s.token, httponly=True, samesite="strict", path="/", secure=request.url.scheme == "https"
        )
        return resp

    @app.post("/api/logout")
    async def logout(request: Request):
        tok = _token(request)
        s = sessions.get(tok)
        if tok:
            sessions.logout(tok)
        if s:
            _audit("logout", s.user, {"address": _client(request)})
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
            await _call(getattr(line, action), s.user, action=action)
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
        await _call(line.select_recipe, name, s.user, action="recipe")
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

    @app.post("/api/capture")
    async def capture(request: Request):
        s = _require(request, "engineer")
        data = await _body(request)
        on = data.get("on")
        if set(data) != {"on"} or not isinstance(on, bool):
            raise ApiError(422, 'expected {"on": true} or {"on": false}')
        return JSONResponse({"ok": True, "capture": _clean(await _call(line.set_capture, on, s.user))})

    @app.post("/api/lot")
    async def lot(request: Request):
        s = _require(request, "operator")
        data = await _body(request)
        value = data.get("lot")
        if set(data) != {"lot"}:
            raise ApiError(422, 'expected {"lot": "the lot number"} ("" ends the lot)')
        if not isinstance(value, str):
            raise ApiError(422, f"lot={value!r}: expected the lot as text")
        return {"ok": True, "lot": await _call(line.set_lot, value, s.user)}

    @app.post("/api/shift_check/override")
    async def shift_check_override(request: Request):
        s = _require(request, "engineer")
        data = await _body(request)
        reason = data.get("reason")
        if set(data) != {"reason"}:
            raise ApiError(422, 'expected {"reason": "why production may start without a passed shift check"}')
        return JSONResponse({"ok": True, "shift_check": _clean(await _call(line.override_check, s.user, reason))})

    return app
