"""What every request to the operator screen goes through before a route sees it
(docs/operator-screen.md, "Every request is hostile"): the Host allowlist against DNS
rebinding, the cross-site checks, the body and JSON-depth limits, the security headers on every
answer, and the request counts for ``/metrics``. :mod:`scallop.app.web` puts
:class:`RequestGuard` in front of its routes.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scallop.app.auth import is_loopback
from scallop.app.metrics import WithoutCreated, render
from scallop.errors import ScallopError

OPERATOR_ACTIONS = ("start", "pause", "stop", "reset")

# No inline script or style, nothing from elsewhere, never inside a frame.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class ApiError(ScallopError):
    """A request refused with ``status``; ``code``/``params`` name its message in the catalogue."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, code: str = "", **params: object
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.message = message
        self.headers = headers or {}
        self.code = code
        self.params = params


def json_depth_ok(raw: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays and objects at most ``limit`` deep (strings skipped).
    Checked before parsing: the parser recurses, and a 60 KB ``[[[[…`` would exhaust the stack."""
    depth, in_str, esc = 0, False, False
    for b in raw:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:  # backslash
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return False
        elif b in (0x5D, 0x7D):
            depth -= 1
    return True


class WebMetrics:
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
    "/api/uv.jpg",
    "/api/channel",
    "/api/recipes",
    "/api/recipe",
    "/api/login",
    "/api/logout",
    "/api/config",
    "/api/capture",
    "/api/lot",
    "/api/shift_check/override",
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


def _origin_parts(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, the default port filled in; None if it is not one."""
    try:
        u = urlsplit(f"{scheme}://{netloc}")
        host, port = u.hostname, u.port
    except ValueError:
        return None
    if not host:
        return None
    return scheme, host, port or (443 if scheme == "https" else 80)


class RequestGuard:
    """ASGI middleware in front of every route: the Host allowlist, the cross-site checks, the
    body limit (counted while the body streams in), the security headers, and the request
    counts for /metrics. Hand-written rather than Starlette's TrustedHostMiddleware: that one
    cannot allow "the address this request came to", answers in plain text and counts nothing."""

    def __init__(self, app, metrics: WebMetrics, allowed_hosts: frozenset[str], max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.allowed_hosts = allowed_hosts
        self.max_body_bytes = max_body_bytes

    def _host_ok(self, host: str, scope) -> bool:
        parts = _origin_parts("http", host)
        if parts is None:
            return False
        name = parts[1]
        server = (scope.get("server") or ("",))[0] or ""
        return is_loopback(name) or name in self.allowed_hosts or name == server.lower().strip("[]")

    def _refusal(self, method: str, scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if not self._host_ok(host, scope):
            return 400, f"this screen does not answer to the host name {host!r}: add it to [ui] allowed_hosts"
        scheme = "https" if scope.get("scheme") == "https" else "http"
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site", "")
        if method not in SAFE_METHODS:
            if origin is not None:
                own = _origin_parts(scheme, host)
                u = urlsplit(origin) if origin != "null" else None
                theirs = _origin_parts(u.scheme, u.netloc) if u is not None and u.scheme in ("http", "https") else None
                if theirs is None or theirs != own:
                    return 403, f"cross-site request from {origin} refused"
            if site not in ("", "same-origin", "none"):
                return 403, f"cross-site request ({site}) refused"
        elif site in ("cross-site", "same-site") and headers.get("sec-fetch-mode") != "navigate":
            # Another site's page may link here, not read from here (an <img> of the camera, a fetch).
            return 403, f"cross-site request ({site}) refused"
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return 400, f"Content-Length {length!r} is not a number"
            if int(length) > self.max_body_bytes:
                return 413, f"request body of {int(length)} bytes is too large: at most {self.max_body_bytes}"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, route = scope["method"], _route_label(scope["path"])
        no_store = scope["path"].startswith("/api/") or scope["path"] == "/metrics"
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                hdrs = [h for h in message.get("headers", []) if h[0].lower() != b"cache-control" or not no_store]
                hdrs += SECURITY_HEADERS
                if no_store:
                    hdrs.append((b"cache-control", b"no-store"))
                if scope.get("scheme") == "https":
                    hdrs.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": hdrs}
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(method, scope, headers)
        if refusal is not None:
            code, msg = refusal
            resp = JSONResponse({"error": msg}, status_code=code, headers={"Connection": "close"})
            await resp(scope, receive, send_wrapper)
            self.metrics.requests.labels(method, route, str(code)).inc()
            return

        seen = 0
        limit = self.max_body_bytes

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Stops reading here: a body sent without Content-Length is cut at the limit.
                    raise ApiError(413, f"request body is too large: at most {limit} bytes")
            return message

        try:
            await self.app(scope, limited_receive, send_wrapper)
        finally:
            self.metrics.requests.labels(method, route, str(status["code"])).inc()
            if route != "/api/events":
                self.metrics.seconds.labels(route).observe(time.perf_counter() - t0)
