"""The operator screen's HTTP API against a fake line, plus the auth helpers and the metrics it serves."""

from __future__ import annotations

import json
import os
import socket
import stat
import time

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from scallop.app.auth import AuthError, LockedOut, SessionStore, UserError, UserFileError, UserStore
from scallop.app.metrics import snapshot_metrics
from scallop.app.web import create_app
from scallop.app.web_server import WebError, serve


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sessions(fast_users, clock):
    return SessionStore(fast_users, idle_timeout_s=600, max_failures=5, lockout_s=30, clock=clock)


@pytest.fixture
def audit_log():
    return []


# The panel on the line's own computer: a loopback client (test_web_hostile.py has the others).
LOCAL = ("127.0.0.1", 50000)


@pytest.fixture
def client(fake_line, fast_users, sessions, audit_log):
    app = create_app(fake_line, fast_users, sessions=sessions, audit=lambda k, u, d: audit_log.append((k, u, d)))
    with TestClient(app, client=LOCAL) as c:
        yield c


def login(client, pin: str) -> str:
    r = client.post("/api/login", json={"pin": pin})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def error(r) -> str:
    body = r.json()
    assert set(body) in ({"error"}, {"error", "code", "params"}), body
    return body["error"]


# ---------------------------------------------------------------------------- page and state


def test_index_and_static_files_are_served(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="estop"' in r.text and 'id="live"' in r.text and "/static/app.js" in r.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "EventSource" in js.text
    css = client.get("/static/style.css")
    assert css.status_code == 200 and "min-height" in css.text
    # No CDN or remote resource: the plant network has no internet.
    for text in (r.text, js.text, css.text):
        assert "http://" not in text and "https://" not in text


def test_state_reports_the_line_snapshot(client, fake_line):
    fake_line.set_counts(seen=120, picked=100, uro_removed=97, missed=3, per_minute=42.5, removal_rate=float("nan"))
    fake_line.skipped_by_reason = {"no_uro": 12, "border": 8}
    fake_line.raise_alarm("critical", "arm left disconnected", "arm:left")
    r = client.get("/api/state")
    assert r.status_code == 200
    d = r.json()
    assert d["state"] == "stopped" and d["recipe"] == "M"
    from scallop.app.version import program_version

    assert d["version"] == program_version()  # shown on the engineer panel
    assert (d["seen"], d["picked"], d["uro_removed"], d["missed"]) == (120, 100, 97, 3)
    assert d["per_minute"] == 42.5
    assert d["removal_rate"] is None  # NaN would break the browser's JSON.parse
    assert d["skipped_by_reason"] == {"no_uro": 12, "border": 8}
    assert [a["name"] for a in d["arms"]] == ["left", "right"]
    assert d["alarms"][0]["text"] == "arm left disconnected" and d["unacked_critical"] is True
    assert d["session"] is None
    assert d["latency_ms"]["inference"] == {"p50": 11.5, "p99": 19.0}


def test_frame_is_404_until_the_line_has_one_then_the_fake_jpeg(client, fake_line):
    r = client.get("/api/frame.jpg")
    assert r.status_code == 404 and error(r) == "no camera frame yet"
    fake_line.new_frame()
    r = client.get("/api/frame.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == "no-store"
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (240, 320, 3)
    assert np.allclose(img[5, 300].astype(int), (255, 0, 255), atol=12)  # magenta background


# ---------------------------------------------------------------------------- login


def test_login_sets_cookie_and_reports_role(client, audit_log):
    r = client.post("/api/login", json={"pin": "1111"})
    assert r.status_code == 200
    body = r.json()
    assert body["user"] == "operator" and body["role"] == "operator" and len(body["token"]) >= 32
    cookie = r.headers["set-cookie"].lower()
    assert "scallop_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/api/state").json()["session"] == {"user": "operator", "role": "operator"}
    assert ("login", "operator", {"role": "operator", "address": "127.0.0.1"}) in audit_log


def test_wrong_pin_is_401(client, audit_log):
    r = client.post("/api/login", json={"pin": "9999"})
    assert r.status_code == 401 and error(r) == "wrong PIN"
    assert r.json()["code"] == "wrong_pin"
    assert "set-cookie" not in r.headers
    assert audit_log[-1] == ("login_refused", "", {"address": "127.0.0.1"})


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"pin": 1111}, 422, "pin=1111: expected a string of 4 to 8 digits"),
        ({}, 422, "pin=None"),
        ({"pin": "1111", "user": 5}, 422, "user=5: expected a string"),
        ({"pin": "1111", "role": "engineer"}, 422, "unknown field(s) role"),
        ([1, 1, 1, 1], 422, "expected a JSON object, got a list"),
    ],
)
def test_login_refuses_wrong_types(client, body, status, words):
    r = client.post("/api/login", json=body)
    assert r.status_code == status
    assert words in error(r)


def test_malformed_json_is_400(client):
    r = client.post("/api/login", content=b'{"pin": "11', headers={"content-type": "application/json"})
    assert r.status_code == 400 and error(r).startswith("malformed JSON")


def test_empty_body_is_400_and_non_json_is_415(client):
    r = client.post("/api/login", content=b"", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "expected a JSON object" in error(r)
    r = client.post("/api/login", content=b"pin=1111", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "application/json" in error(r)


def test_huge_body_is_413(client):
    r = client.post(
        "/api/login", content=b'{"pin": "' + b"1" * 70000 + b'"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "too large" in error(r)


def test_wrong_pins_lock_the_pad_then_it_opens_again(client, clock, audit_log):
    for _ in range(4):
        assert client.post("/api/login", json={"pin": "0000"}).status_code == 401
    r = client.post("/api/login", json={"pin": "0000"})
    assert r.status_code == 429 and r.headers["retry-after"] == "30" and "try again in 30 s" in error(r)
    assert r.json()["code"] == "locked" and r.json()["params"] == {"seconds": 30}
    assert audit_log[-1] == ("login_locked", "", {"address": "127.0.0.1", "retry_after_s": 30})
    # Even the right PIN waits out the lock: otherwise the lock would not slow guessing.
    assert client.post("/api/login", json={"pin": "1111"}).status_code == 429
    clock.t += 31
    assert client.post("/api/login", json={"pin": "1111"}).status_code == 200


def test_logout_ends_the_session(client, fake_line):
    tok = login(client, "1111")
    assert client.post("/api/logout").json() == {"ok": True}
    r = client.post("/api/start", headers={"authorization": f"Bearer {tok}"})
    assert r.status_code == 401
    assert fake_line.calls == []


def test_idle_session_expires(client, clock, fake_line):
    login(client, "1111")
    clock.t += 599
    assert client.post("/api/start").status_code == 200  # use refreshes the idle timer
    clock.t += 601
    r = client.post("/api/pause")
    assert r.status_code == 401 and "log in as operator" in error(r)


# ---------------------------------------------------------------------------- control


@pytest.mark.parametrize("action", ["start", "pause", "stop", "reset"])
def test_control_without_login_is_401_and_the_line_is_untouched(client, fake_line, action):
    r = client.post(f"/api/{action}")
    assert r.status_code == 401 and error(r) == "log in as operator first"
    assert (r.json()["code"], r.json()["params"]) == ("login_needed", {"role": "#role.operator"})
    assert fake_line.calls == [] and fake_line.state == "stopped"


def test_operator_runs_the_line(client, fake_line):
    login(client, "1111")
    assert client.post("/api/start").json() == {"ok": True, "state": "running"}
    assert client.post("/api/pause").json()["state"] == "paused"
    assert client.post("/api/start").json()["state"] == "running"
    assert client.post("/api/stop").json()["state"] == "stopped"
    assert fake_line.calls == [
        ("start", "operator"),
        ("pause", "operator"),
        ("start", "operator"),
        ("stop", "operator"),
    ]


def test_engineer_may_do_operator_actions(client, fake_line):
    login(client, "2222")
    assert client.post("/api/start").status_code == 200
    assert fake_line.calls == [("start", "engineer")]


def test_bearer_token_works_without_cookie(fake_line, fast_users):
    app = create_app(fake_line, fast_users)
    with TestClient(app, client=LOCAL) as c:
        tok = c.post("/api/login", json={"pin": "1111"}).json()["token"]
        c.cookies.clear()
        assert c.post("/api/start").status_code == 401
        assert c.post("/api/start", headers={"Authorization": f"Bearer {tok}"}).status_code == 200
    assert fake_line.calls == [("start", "operator")]


def test_action_refused_in_this_state_is_409(client, fake_line):
    login(client, "1111")
    r = client.post("/api/pause")
    assert r.status_code == 409 and error(r) == "cannot pause while the line is stopped"
    assert r.json()["code"] == "not_now"
    assert r.json()["params"] == {"action": "#action.pause", "state": "#state.stopped"}
    r = client.post("/api/reset")
    assert r.status_code == 409


def test_estop_needs_no_login_and_reset_needs_one(client, fake_line):
    fake_line.state = "running"
    r = client.post("/api/estop")
    assert r.status_code == 200 and r.json()["state"] == "estop"
    assert fake_line.calls == [("estop", "screen")]
    assert client.post("/api/reset").status_code == 401
    login(client, "1111")
    assert client.post("/api/start").status_code == 409  # estop: reset first
    assert client.post("/api/reset").json()["state"] == "stopped"
    assert fake_line.calls[-1] == ("reset", "operator")


def test_cross_site_post_is_refused(client, fake_line):
    r = client.post("/api/estop", headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in error(r)
    assert fake_line.calls == []
    r = client.post("/api/estop", headers={"origin": "http://testserver"})
    assert r.status_code == 200


def test_unknown_path_and_wrong_method(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and error(r) == "no such page: /api/nothing"
    r = client.get("/api/start")
    assert r.status_code == 405 and error(r) == "GET is not allowed on /api/start"


# ---------------------------------------------------------------------------- alarms


def test_alarm_ack(client, fake_line):
    a = fake_line.raise_alarm("critical", "camera stalled", "camera")
    assert client.post(f"/api/alarms/{a.id}/ack").status_code == 401
    login(client, "1111")
    r = client.post("/api/alarms/abc/ack")
    assert r.status_code == 422 and error(r) == "alarm id 'abc' is not a number"
    r = client.post("/api/alarms/99/ack")
    assert r.status_code == 404 and error(r) == "no alarm 99 on the line"
    r = client.post(f"/api/alarms/{a.id}/ack")
    assert r.status_code == 200 and r.json() == {"ok": True, "alarm": a.id}
    d = client.get("/api/state").json()
    assert d["alarms"][0]["acked"] is True and d["alarms"][0]["acked_by"] == "operator"
    assert d["unacked_critical"] is False


# ---------------------------------------------------------------------------- recipes


def test_recipes_list_and_select(client, fake_line):
    r = client.get("/api/recipes").json()
    assert [x["name"] for x in r["recipes"]] == ["S", "M", "L"] and r["current"] == "M"
    assert r["recipes"][2] == {
        "name": "L",
        "product_size_mm": [62.0, 75.0],
        "belt_speed_mm_s": 300.0,
        "description": "large",
    }
    assert client.post("/api/recipe", json={"name": "L"}).status_code == 401
    login(client, "1111")
    r = client.post("/api/recipe", json={"name": "XL"})
    assert r.status_code == 404 and error(r) == "unknown recipe 'XL': choose one of S, M, L"
    r = client.post("/api/recipe", json={"name": 3})
    assert r.status_code == 422 and "name=3" in error(r)
    r = client.post("/api/recipe", content=b"{name: L}", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert client.post("/api/recipe", json={"name": "L"}).json() == {"ok": True, "recipe": "L"}
    assert fake_line.recipe == "L"
    fake_line.state = "running"
    r = client.post("/api/recipe", json={"name": "S"})
    assert r.status_code == 409 and "pause or stop" in error(r)
    assert fake_line.recipe == "L"


# ---------------------------------------------------------------------------- configuration


def test_config_needs_an_engineer(client, fake_line):
    r = client.get("/api/config")
    assert r.status_code == 401 and error(r) == "log in as engineer first"
    login(client, "1111")
    r = client.get("/api/config")
    assert r.status_code == 403 and error(r) == "operator is logged in as operator: this needs an engineer login"
    r = client.post("/api/config", json={"changes": {"belt.speed_mm_s": 300}})
    assert r.status_code == 403
    assert fake_line.config["belt"]["speed_mm_s"] == 250.0


def test_engineer_reads_and_changes_config(client, fake_line, audit_log):
    login(client, "2222")
    assert client.get("/api/config").json() == {"belt": {"speed_mm_s": 250.0}, "camera": {"exposure_us": 800}}
    r = client.post("/api/config", json={"changes": {"belt.speed_mm_s": 900}})
    assert r.status_code == 422 and error(r) == "belt.speed_mm_s=900 is out of range: allowed 0..500"
    r = client.post("/api/config", json={"changes": {"belt.speed": 1}})
    assert r.status_code == 422 and error(r).startswith("belt.speed: unknown key")
    r = client.post("/api/config", json={"changes": {"belt.speed_mm_s": "fast"}})
    assert r.status_code == 422 and "expected a number" in error(r)
    for bad in ({"belt.speed_mm_s": 300}, {"changes": {}}, {"changes": [1]}, {"changes": {"a": 1}, "x": 1}):
        r = client.post("/api/config", json=bad)
        assert r.status_code == 422 and '"changes"' in error(r)
    r = client.post("/api/config", json={"changes": {"belt.speed_mm_s": 300}})
    assert r.status_code == 200 and r.json()["config"]["belt"]["speed_mm_s"] == 300
    assert fake_line.config["belt"]["speed_mm_s"] == 300
    assert ("config", "engineer", {"changes": {"belt.speed_mm_s": 300}}) in audit_log


# ---------------------------------------------------------------------------- fluorescence channel


@pytest.mark.parametrize("path", ["/api/uv.jpg", "/api/channel"])
def test_the_fluorescence_channel_needs_an_engineer(client, fake_line, path):
    fake_line.with_channel()
    r = client.get(path)
    assert r.status_code == 401 and error(r) == "log in as engineer first"
    login(client, "1111")
    r = client.get(path)
    assert r.status_code == 403 and error(r) == "operator is logged in as operator: this needs an engineer login"


def test_the_fluorescence_channel_is_404_on_a_line_without_one_and_before_its_first_pair(client, fake_line):
    login(client, "2222")
    for path in ("/api/uv.jpg", "/api/channel"):
        r = client.get(path)
        assert (
            r.status_code == 404 and error(r) == "this line has no fluorescence channel ([camera.fluorescence] setup)"
        )
        assert r.headers["cache-control"] == "no-store"
    fake_line.with_channel(pairs=0, dropped={})
    r = client.get("/api/uv.jpg")
    assert r.status_code == 404 and error(r) == "no fluorescence image yet"
    figures = client.get("/api/channel").json()
    assert figures["pairs"] == 0 and "belt_level" not in figures and "glow_level" not in figures


def test_the_engineer_gets_the_fluorescence_image_as_measured(client, fake_line):
    fake_line.with_channel()
    login(client, "2222")
    r = client.get("/api/uv.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == "no-store"  # a proxy or the browser must not show an old one
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape == (240, 320)  # one grey plane
    assert abs(int(img[5, 5]) - fake_line.UV_BELT) <= 3
    for x, y, _, level in fake_line.UV_BLOBS:
        assert abs(int(img[y, x]) - level) <= 6


def test_the_fluorescence_figures_are_json(client, fake_line):
    fake_line.with_channel(
        setup="second_camera", dropped={"missing": 2, "apart": 1}, dropped_in_a_row=1, last_dt_ms=float("nan")
    )
    login(client, "2222")
    r = client.get("/api/channel")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "setup": "second_camera",
        "pairs": 120,
        "dropped": {"missing": 2, "apart": 1},
        "dropped_in_a_row": 1,
        "lost": False,
        "last_dt_ms": None,  # NaN would break the browser's JSON.parse
        "last_shift_mm": 6.0,
        "belt_dark_max": 10.0,
        "glow_min": 100.0,
        "belt_level": 6.0,
        "glow_level": 196.0,
        "misregistered": False,
        "registration_offset_mm": [0.3, -0.4],
        "registration_limit_mm": 2.0,
        "registration_misses": 0.05,
        "registration_needs_uros": 15,
    }


# ---------------------------------------------------------------------------- /metrics


def families(text: str) -> dict:
    """Exposition text's families by the name a dashboard queries (the parser drops a counter's ``_total``)."""
    return {f.name + ("_total" if f.type == "counter" else ""): f for f in text_string_to_metric_families(text)}


def samples(family) -> list[tuple[str, dict, float]]:
    return [(s.name, s.labels, s.value) for s in family.samples]


def test_metrics_is_valid_prometheus_text_without_login(client, fake_line):
    fake_line.set_counts(seen=7, frames_dropped=2)
    fake_line.skipped_by_reason = {"no_uro": 3}
    client.get("/api/state")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = families(r.text)
    assert fams["scallop_seen_total"].type == "counter"
    assert samples(fams["scallop_seen_total"]) == [("scallop_seen_total", {}, 7.0)]
    assert ("scallop_skipped_by_reason_total", {"reason": "no_uro"}, 3.0) in samples(
        fams["scallop_skipped_by_reason_total"]
    )
    assert ("scallop_line_state", {"state": "stopped"}, 1.0) in samples(fams["scallop_line_state"])
    reqs = samples(fams["scallop_web_requests_total"])
    assert ("scallop_web_requests_total", {"method": "GET", "route": "/api/state", "status": "200"}, 1.0) in reqs
    assert fams["scallop_web_line_metrics_ok"].samples[0].value == 1.0


def test_a_crashed_line_gives_a_json_500(fake_line, fast_users):
    def crashed():
        raise ZeroDivisionError("division by zero")

    fake_line.snapshot = crashed
    with TestClient(create_app(fake_line, fast_users), raise_server_exceptions=False, client=LOCAL) as c:
        r = c.get("/api/state")
    assert r.status_code == 500 and error(r) == "internal error: ZeroDivisionError: division by zero"


def test_metrics_still_answer_when_the_line_does_not(fake_line, fast_users):
    def broken():
        raise RuntimeError("runtime gone")

    fake_line.metrics_text = broken
    with TestClient(create_app(fake_line, fast_users), client=LOCAL) as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    assert families(r.text)["scallop_web_line_metrics_ok"].samples[0].value == 0.0


def test_healthz_is_200_while_the_line_lives_and_503_when_it_does_not(client, fake_line):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["version"]
    assert r.headers["cache-control"] == "no-store"
    fake_line.state = "fault"
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "unhealthy" and r.json()["state"] == "fault"

    def broken():
        raise RuntimeError("runtime gone")

    fake_line.health = broken
    r = client.get("/healthz")
    assert r.status_code == 503 and "runtime gone" in r.json()["error"]


# ---------------------------------------------------------------------------- real server, live events


def _read_event(lines, deadline: float) -> dict:
    event, data = None, None
    for line in lines:
        if time.monotonic() > deadline:
            break
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = line.split(":", 1)[1].strip()
        elif line == "" and event == "state" and data:
            return json.loads(data)
    raise AssertionError("no state event in time")


def test_live_events_follow_the_line_and_stop_with_the_server(fake_line, fast_users):
    app = create_app(fake_line, fast_users, event_interval_s=0.05)
    server = serve(app, "127.0.0.1", 0)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=server.url, timeout=5) as c:
            with c.stream("GET", "/api/events") as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                lines = r.iter_lines()
                first = _read_event(lines, time.monotonic() + 3)
                assert first["seen"] == 0
                fake_line.set_counts(seen=5)
                fake_line.raise_alarm("warning", "belt slipping")
                while True:
                    ev = _read_event(lines, time.monotonic() + 3)
                    if ev["seen"] == 5:
                        break
                assert ev["alarms"][0]["text"] == "belt slipping"
                m = families(c.get("/metrics").text)
                assert m["scallop_web_event_clients"].samples[0].value == 1.0
                t0 = time.monotonic()
                server.stop()
                # The open stream must not hold the shutdown up to the grace timeout.
                assert time.monotonic() - t0 < 2.0
                rest = "".join(lines)  # the server ended the stream
                assert "event: state" in rest or rest == ""
    finally:
        server.stop()


def test_serve_refuses_a_busy_port(fake_line, fast_users):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        with pytest.raises(WebError, match=rf"cannot serve on 127.0.0.1:{port}: Address already in use"):
            serve(create_app(fake_line, fast_users), "127.0.0.1", port)
    finally:
        busy.close()


def test_serve_binds_localhost_by_default(fake_line, fast_users):
    import inspect

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    with serve(create_app(fake_line, fast_users), port=0) as server:
        assert server.host == "127.0.0.1"
        assert httpx.get(server.url + "/api/state", timeout=5).json()["state"] == "stopped"


def test_create_app_checks_its_arguments(fake_line, fast_users):
    with pytest.raises(ValueError, match=r"event_interval_s=0 is out of range: allowed 0.01..10"):
        create_app(fake_line, fast_users, event_interval_s=0)


# ---------------------------------------------------------------------------- users and PINs


def test_users_file_stores_salted_hashes_only(tmp_path):
    p = tmp_path / "users.json"
    store = UserStore(p, scrypt_n=2**8)
    store.add("maria", "operator", "4711")
    store.add("ken", "engineer", "800851")
    store.save()
    text = p.read_text()
    assert "4711" not in text and "800851" not in text
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    data = json.loads(text)
    h1, h2 = (u["pin"] for u in data["users"])
    assert h1["kdf"] == "scrypt" and h1["salt"] != h2["salt"]
    loaded = UserStore.load(p)
    assert loaded.verify("4711").name == "maria"
    assert loaded.verify("800851", "ken").role == "engineer"
    with pytest.raises(AuthError, match="wrong PIN"):
        loaded.verify("4711", "ken")
    with pytest.raises(AuthError):
        loaded.verify("12")


def test_same_pin_twice_gets_different_hashes():
    from scallop.app.auth import hash_pin, verify_pin

    a, b = hash_pin("1234", n=2**8), hash_pin("1234", n=2**8)
    assert a["hash"] != b["hash"]
    assert verify_pin("1234", a) and verify_pin("1234", b) and not verify_pin("1235", a)


@pytest.mark.parametrize(
    "args, msg",
    [
        (("x", "boss", "1234"), "role='boss' is not allowed: choose one of operator, engineer"),
        (("x", "operator", "12"), "a PIN is 4 to 8 digits"),
        (("x", "operator", "12a4"), "a PIN is 4 to 8 digits"),
        (("x", "engineer", "12345"), "an engineer's PIN is 6 to 8 digits"),
        (("operator", "operator", "5555"), "user 'operator' already exists"),
        (("y", "operator", "1111"), "that PIN is the simulator's, published in the manual"),
        (("y", "operator", "4242"), "that PIN is already in use"),
    ],
)
def test_add_user_refuses_bad_input(args, msg):
    store = UserStore.simulator_defaults(scrypt_n=2**8)
    store.add("z", "operator", "4242")
    with pytest.raises(UserError, match=msg):
        store.add(*args)


@pytest.mark.parametrize(
    "content, msg",
    [
        ("{nope", "not a users file"),
        ('{"people": []}', 'expected {"users": \\[...\\]}'),
        ('{"users": [{"name": "a", "role": "chef", "pin": {}}]}', r"users\[0\].role='chef' is not allowed"),
        (
            '{"users": [{"name": "a", "role": "operator", "pin": {"kdf": "scrypt"}}]}',
            r"users\[0\].pin: expected a PIN hash",
        ),
    ],
)
def test_bad_users_file_names_the_problem(tmp_path, content, msg):
    p = tmp_path / "users.json"
    p.write_text(content)
    with pytest.raises(UserFileError, match=msg):
        UserStore.load(p)
    with pytest.raises(FileNotFoundError, match="no such users file"):
        UserStore.load(tmp_path / "missing.json")


def test_simulator_defaults_are_the_documented_pins():
    import scallop.app.auth as auth

    store = UserStore.simulator_defaults(scrypt_n=2**8)
    assert {(u.name, u.role) for u in store.users()} == {("operator", "operator"), ("engineer", "engineer")}
    assert store.verify("1111").name == "operator" and store.verify("2222").name == "engineer"
    assert "operator   operator  1111" in auth.__doc__ and "engineer   engineer  2222" in auth.__doc__


def test_lockout_counts_only_consecutive_failures(fast_users):
    clock = Clock()
    s = SessionStore(fast_users, max_failures=3, lockout_s=10, clock=clock)
    for _ in range(2):
        with pytest.raises(AuthError):
            s.login("0000", client="10.0.0.7")
    s.login("1111", client="10.0.0.7")  # success resets the count
    for _ in range(2):
        with pytest.raises(AuthError):
            s.login("0000", client="10.0.0.7")
    with pytest.raises(LockedOut) as e:
        s.login("0000", client="10.0.0.7")
    assert e.value.retry_after_s == 10
    clock.t += 5
    with pytest.raises(LockedOut, match="try again in 5 s"):
        s.login("1111", client="10.0.0.7")
    # One address guessing locks out that address, not the other panels.
    assert s.login("1111", client="10.0.0.8").user == "operator"


def test_each_lockout_lasts_twice_the_one_before_until_a_right_pin(fast_users):
    clock = Clock()
    s = SessionStore(fast_users, max_failures=2, lockout_s=10, max_lockout_s=35, clock=clock)
    waits = []
    for _ in range(4):
        with pytest.raises(AuthError):
            s.login("0000", client="10.0.0.7")
        with pytest.raises(LockedOut) as e:
            s.login("0000", client="10.0.0.7")
        waits.append(e.value.retry_after_s)
        clock.t += e.value.retry_after_s
    assert waits == [10, 20, 35, 35]
    s.login("1111", client="10.0.0.7")
    with pytest.raises(AuthError):
        s.login("0000", client="10.0.0.7")
    with pytest.raises(LockedOut) as e:
        s.login("0000", client="10.0.0.7")
    assert e.value.retry_after_s == 10


def test_a_named_user_is_locked_from_every_address(fast_users):
    clock = Clock()
    s = SessionStore(fast_users, max_failures=3, lockout_s=10, clock=clock)
    for i in range(2):
        with pytest.raises(AuthError):
            s.login("0000", "engineer", client=f"10.0.0.{i}")
    with pytest.raises(LockedOut):
        s.login("0000", "engineer", client="10.0.0.9")
    with pytest.raises(LockedOut):  # the right PIN, from a fresh address: the name is locked
        s.login("2222", "engineer", client="10.0.0.10")
    assert s.login("1111", client="10.0.0.10").user == "operator"  # others are not


# ---------------------------------------------------------------------------- snapshot metrics


def test_snapshot_metrics_cover_the_snapshot(fake_line):
    from scallop.app.line_api import Alarm

    fake_line.set_counts(seen=10, picked=8, uro_removed=7, frames=300, frames_dropped=4, per_minute=33.0)
    fake_line.arms[0].state = "picking"
    fake_line.alarms.append(Alarm(1, 0.0, "critical", "arm:right", "gone"))
    fams = families(snapshot_metrics(fake_line.snapshot()))
    assert fams["scallop_frames_dropped_total"].samples[0].value == 4
    assert ("scallop_arm_state", {"arm": "left", "state": "picking"}, 1.0) in samples(fams["scallop_arm_state"])
    assert ("scallop_arm_state", {"arm": "left", "state": "idle"}, 0.0) in samples(fams["scallop_arm_state"])
    assert ("scallop_stage_latency_seconds", {"stage": "inference", "quantile": "0.99"}, 0.019) in samples(
        fams["scallop_stage_latency_seconds"]
    )
    assert ("scallop_alarms_unacked", {"severity": "critical"}, 1.0) in samples(fams["scallop_alarms_unacked"])


def test_a_start_refused_for_a_busy_port_never_touches_the_arm(tmp_path, monkeypatch, capsys):
    """An outside try's `scallop run` stopped on "Address already in use" after it had
    connected its arm and sent MOVE_READY: the arm then faulted on its watchdog and waited for
    an operator. The screen's address is taken before any device opens."""
    from scallop.app.backends import default_sim_arms
    from scallop.app.cli import main
    from scallop.app.config import load_config, to_dict
    from scallop.robot.clock import SystemClock
    from scallop.sim.arm import SimArm

    arm = SimArm(default_sim_arms(1)[0], clock=SystemClock()).start()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    over = {
        "arms": [to_dict(default_sim_arms(1)[0]) | {"transport": to_dict(arm.transport_config())}],
        "record": {"path": str(tmp_path / "record.sqlite")},
    }
    monkeypatch.setattr("scallop.app.config.load_config", lambda path=None: load_config(overrides=over))
    try:
        rc = main(["run", "--port", str(port), "--duration", "2", "--no-browser", "--start"])
        assert rc != 0
        assert f"cannot serve on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err
        assert arm.write_log == []  # not a heartbeat, not a command
    finally:
        busy.close()
        arm.close()
