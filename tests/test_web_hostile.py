"""Hostile requests against the running operator screen (uvicorn on loopback, real sockets).

The screen may face a plant network: each request here is one a curious or hostile browser, page
or script could send. Every one must get a 4xx, leave the line untouched, and count no more PIN
tries than the lock-out allows. docs/operator-screen.md lists them with their answers.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from scallop.app.auth import SessionStore, UserStore
from scallop.app.web import create_app
from scallop.app.web_server import serve

MAX_BODY = 64 * 1024


class CountingUsers(UserStore):
    """The simulator's users, counting every PIN check; each check takes as long as a real
    scrypt (~50 ms), so parallel guesses are all in flight together, as they would be."""

    def __init__(self) -> None:
        super().__init__(scrypt_n=2**8)
        base = UserStore.simulator_defaults(scrypt_n=2**8)
        self._users = {u.name: u for u in base.users()}
        self.checks = 0
        self._count_lock = threading.Lock()

    def verify(self, pin, name=None):
        with self._count_lock:
            self.checks += 1
        time.sleep(0.05)
        return super().verify(pin, name)


@pytest.fixture
def server(fake_line):
    users = CountingUsers()
    app = create_app(
        fake_line, users, sessions=SessionStore(users), allowed_hosts=["line3.plant.example"], max_body_bytes=MAX_BODY
    )
    srv = serve(app, "127.0.0.1", 0)
    try:
        yield srv, fake_line, users
    finally:
        srv.stop()


def _http(srv, **kw) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=10, **kw)


# ---------------------------------------------------------------------------- Host (DNS rebinding)


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/"),
        ("GET", "/api/state"),
        ("GET", "/api/frame.jpg"),
        ("GET", "/api/uv.jpg"),
        ("POST", "/api/login"),
        ("POST", "/api/estop"),
    ],
)
@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "line3.plant.example.evil", "[::2]:80"])
def test_a_foreign_host_is_refused(server, method, path, host):
    srv, line, users = server
    with _http(srv) as c:
        r = c.request(method, path, headers={"host": host}, json={"pin": "1111"} if method == "POST" else None)
    assert r.status_code == 400, r.text
    assert "does not answer to the host name" in r.json()["error"]
    assert line.calls == [] and users.checks == 0


def test_loopback_the_configured_name_and_the_servers_own_address_are_served(server):
    srv, line, _ = server
    with _http(srv) as c:
        for host in (f"127.0.0.1:{srv.port}", f"localhost:{srv.port}", "line3.plant.example", "LINE3.plant.example:80"):
            assert c.get("/api/state", headers={"host": host}).status_code == 200, host


def test_a_request_without_a_host_is_refused(server):
    srv, _, _ = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"POST /api/estop HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        reply = _read_all(s)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]


# ---------------------------------------------------------------------------- cross-site requests


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "null"},
        {"origin": "http://evil.example"},
        {"origin": "http://127.0.0.1:1"},  # same host, another port: another origin
        {"origin": "https://127.0.0.1"},
        {"origin": "file://"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"sec-fetch-site": "cross-site", "origin": "OWN"},
    ],
    ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()),
)
@pytest.mark.parametrize("path", ["/api/estop", "/api/login", "/api/start", "/api/logout"])
def test_a_cross_site_write_is_refused(server, headers, path):
    srv, line, users = server
    headers = {k: (srv.url if v == "OWN" else v) for k, v in headers.items()}
    with _http(srv) as c:
        r = c.post(path, headers=headers, json={"pin": "1111"})
    assert r.status_code == 403 and "cross-site request" in r.json()["error"], r.text
    assert line.calls == [] and users.checks == 0


def test_the_screens_own_page_may_write(server):
    srv, line, _ = server
    with _http(srv) as c:
        r = c.post("/api/estop", headers={"origin": srv.url, "sec-fetch-site": "same-origin"})
    assert r.status_code == 200 and line.calls == [("estop", "screen")]


@pytest.mark.parametrize(
    "path, mode",
    [
        ("/api/state", "cors"),
        ("/api/frame.jpg", "no-cors"),
        ("/api/uv.jpg", "no-cors"),
        ("/api/channel", "cors"),
        ("/api/events", "cors"),
        ("/metrics", "cors"),
    ],
)
def test_a_cross_site_read_is_refused_but_a_link_to_the_screen_works(server, path, mode):
    srv, line, _ = server
    line.new_frame()
    line.with_channel()
    with _http(srv) as c:
        r = c.get(path, headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": mode})
        # The guard's refusal, not the engineer endpoints' own 401/403 for a missing login.
        assert r.status_code == 403 and "cross-site request" in r.json()["error"], r.text
        page = c.get("/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"})
    assert page.status_code == 200 and 'id="estop"' in page.text


# ---------------------------------------------------------------------------- PIN guessing


def test_64_parallel_pin_guesses_get_no_more_tries_than_serial_ones(server):
    srv, line, users = server
    with _http(srv, limits=httpx.Limits(max_connections=64)) as c:

        def guess(i: int) -> int:
            return c.post("/api/login", json={"pin": f"{9000 + i:04d}"}).status_code

        with ThreadPoolExecutor(64) as pool:
            codes = list(pool.map(guess, range(64)))
        assert set(codes) <= {401, 429}, codes
        assert codes.count(401) <= 5 and codes.count(429) >= 59, codes
        assert users.checks <= 5  # the PIN was checked at most max_failures times
        # This address is locked out now, the right PIN included ...
        r = c.post("/api/login", json={"pin": "1111"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # ... but another panel is not: the lock-out is per address, not global.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with _http(srv, transport=transport) as other:
        assert other.post("/api/login", json={"pin": "1111"}).status_code == 200
    assert users.checks <= 6


def test_parallel_guesses_for_one_user_from_many_addresses_are_counted_once_each(server):
    srv, _, users = server

    def guess(i: int) -> int:
        transport = httpx.HTTPTransport(local_address=f"127.0.1.{i + 1}")
        with _http(srv, transport=transport) as c:
            return c.post("/api/login", json={"pin": f"{900000 + i}", "user": "engineer"}).status_code

    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(guess, range(32)))
    assert codes.count(401) <= 5 and codes.count(429) >= 27, codes
    assert users.checks <= 5


# ---------------------------------------------------------------------------- bodies


def test_a_300_mb_body_is_refused_before_it_is_read(server):
    srv, _, users = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(
            b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 300000000\r\n\r\n" + b"{" * 1000
        )
        reply = _read_all(s)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert users.checks == 0


def test_a_chunked_body_is_cut_at_the_limit_while_it_streams(server):
    srv, _, users = server
    sent = 0
    reply = b""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(
            b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
        try:
            while sent < 300_000_000:
                s.sendall(chunk)
                sent += 16384
                s.settimeout(0.0)
                try:
                    reply = s.recv(65536)
                except BlockingIOError:
                    reply = b""
                s.settimeout(5)
                if reply:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: it stopped reading
    # The client got no further than the socket buffers hold: the server stopped at 64 KB.
    assert sent < 16 * 1024 * 1024, sent
    if reply:
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    with _http(srv) as c:
        m = c.get("/metrics").text
    assert 'route="/api/login",status="413"' in m
    assert users.checks == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"pin": ' + b"[" * 30000 + b"]" * 30000 + b"}",
        b"[" * 60000,
        b'{"pin": "1111", "user": ' + b'{"a":' * 10000 + b"1" + b"}" * 10000 + b"}",
    ],
    ids=["nested-array-in-object", "unclosed-arrays", "nested-objects"],
)
def test_deeply_nested_json_is_a_400_not_a_crash(server, body):
    srv, _, users = server
    assert len(body) < MAX_BODY
    with _http(srv) as c:
        r = c.post("/api/login", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "nested more than" in r.json()["error"], r.text
        assert c.get("/api/state").status_code == 200  # still serving
    assert users.checks == 0


@pytest.mark.parametrize(
    "content, ctype, status",
    [
        (b'{"pin": "\xff\xfe"}', "application/json", 400),
        (b"pin=1111", "application/x-www-form-urlencoded", 415),
        (b'{"pin": "1111"}', "text/plain", 415),
        (b'{"pin": 1e999}', "application/json", 422),
        (b'{"pin": "' + b"1" * 70000 + b'"}', "application/json", 413),
    ],
)
def test_odd_bodies_get_a_4xx(server, content, ctype, status):
    srv, _, _ = server
    with _http(srv) as c:
        r = c.post("/api/login", content=content, headers={"content-type": ctype})
    assert r.status_code == status, r.text


# ---------------------------------------------------------------------------- answers


def test_every_answer_carries_the_security_headers(server):
    srv, _, _ = server
    with _http(srv) as c:
        answers = [
            c.get("/"),
            c.get("/static/app.js"),
            c.get("/api/state"),
            c.get("/api/nothing"),
            c.get("/", headers={"host": "evil.example"}),
        ]
    for r in answers:
        h = r.headers
        assert "script-src 'self'" in h["content-security-policy"], r.url
        assert (
            "unsafe-inline" not in h["content-security-policy"]
            and "frame-ancestors 'none'" in h["content-security-policy"]
        )
        assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer"
        assert h["x-content-type-options"] == "nosniff"
    for r in answers[2:4]:
        assert r.headers["cache-control"] == "no-store"


def test_camera_and_metrics_need_a_login_off_loopback(fake_line, fast_users):
    fake_line.new_frame()
    for frame_access, metrics_access, without_login in (
        ("loopback", "loopback", 401),
        ("login", "login", 401),
        ("anyone", "anyone", 200),
    ):
        app = create_app(fake_line, fast_users, frame_access=frame_access, metrics_access=metrics_access)
        with TestClient(app, client=("192.168.10.20", 40000)) as c:
            assert c.get("/api/frame.jpg").status_code == without_login
            assert c.get("/metrics").status_code == without_login
            assert c.get("/api/state").status_code == 200  # the screen itself: counts, alarms, E-STOP
            c.post("/api/login", json={"pin": "1111"})
            assert c.get("/api/frame.jpg").status_code == 200
            assert c.get("/metrics").status_code == 200
        with TestClient(app, client=("127.0.0.1", 40000)) as c:
            assert c.get("/api/frame.jpg").status_code == (401 if frame_access == "login" else 200)


def test_login_events_go_into_the_record(tmp_path, fake_line, fast_users):
    from scallop.app.record import RecordWriter

    with RecordWriter(tmp_path / "record.sqlite") as w:
        app = create_app(fake_line, fast_users, audit=w.event)
        with TestClient(app, client=("192.168.10.20", 40000)) as c:
            c.post("/api/login", json={"pin": "9999"})
            c.post("/api/login", json={"pin": "1111"})
            c.post("/api/logout")
    con = sqlite3.connect(tmp_path / "record.sqlite")
    try:
        rows = con.execute("SELECT kind, user, detail FROM events ORDER BY id").fetchall()
    finally:
        con.close()
    got = [(k, u, json.loads(d)) for k, u, d in rows if k.startswith("log")]
    assert got == [
        ("login_refused", "", {"address": "192.168.10.20"}),
        ("login", "operator", {"role": "operator", "address": "192.168.10.20"}),
        ("logout", "operator", {"address": "192.168.10.20"}),
    ]


def test_tls_serves_https_with_a_secure_cookie(tmp_path, fake_line, fast_users):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    ca.cert_pem.write_to_path(cafile)
    with serve(create_app(fake_line, fast_users), "127.0.0.1", 0, certfile=certfile, keyfile=keyfile) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        with httpx.Client(base_url=srv.url, verify=ssl.create_default_context(cafile=str(cafile)), timeout=10) as c:
            r = c.post("/api/login", json={"pin": "1111"}, headers={"origin": srv.url})
            assert r.status_code == 200
            cookie = r.headers["set-cookie"].lower()
            assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
            assert r.headers["strict-transport-security"].startswith("max-age=")
            # An http:// page is another origin than the https:// screen.
            r = c.post("/api/estop", headers={"origin": srv.url.replace("https", "http")})
            assert r.status_code == 403 and fake_line.calls == []


def _read_all(s: socket.socket) -> bytes:
    s.settimeout(5)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                length = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                if length and len(rest) >= int(length[0].split(b":")[1]):
                    break
    except (TimeoutError, ConnectionResetError):
        pass
    return out
