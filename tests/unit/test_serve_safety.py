"""What the service tells browsers (security headers on every answer) and operators (a warning
when it listens beyond this machine without a token)."""

from __future__ import annotations

import logging
import re
import socket
import warnings
from html.parser import HTMLParser

import pytest
import uvicorn
from starlette import exceptions as starlette_exceptions

with warnings.catch_warnings():
    warnings.simplefilter("ignore", getattr(starlette_exceptions, "StarletteDeprecationWarning", DeprecationWarning))
    from fastapi.testclient import TestClient

from imgrade.serve import Limits, create_app, serve
from imgrade.serve import server as server_module
from imgrade.serve.app import STATIC_DIR
from imgrade.serve.guards import PAGE_POLICY
from imgrade.serve.server import loopback

# ----------------------------------------------------------------------------- security headers


def _assert_headers(response, policy: str = PAGE_POLICY) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("x-frame-options") == "DENY", where
    assert response.headers.get("referrer-policy") == "no-referrer", where
    assert response.headers.get("content-security-policy") == policy, where


def test_every_answer_carries_the_security_headers(idle_grader):
    app = create_app(idle_grader, token="s3cret", limits=Limits(max_upload_mb=1))
    with TestClient(app) as client:
        answers = [
            client.get("/"),
            client.get("/static/app.js"),
            client.get("/static/style.css"),
            client.get("/static/no-such-file.js"),  # 404 from the static files
            client.get("/healthz"),
            client.get("/openapi.json"),
            client.get("/v1/model"),  # 401: no token
            client.get("/v1/model", headers={"Authorization": "Bearer s3cret"}),
            client.get("/v1/grade", headers={"Authorization": "Bearer s3cret"}),  # 405
            client.post("/v1/grade", headers={"Authorization": "Bearer s3cret"}, content=b"x"),  # 415
            client.post("/v1/grade", headers={"Content-Length": str(2 << 20)}, content=b"x" * (2 << 20)),  # 413
            client.get("/no-such-page"),  # 404
        ]
        assert [r.status_code for r in answers] == [200, 200, 200, 404, 200, 200, 401, 200, 405, 415, 413, 404]
        for response in answers:
            _assert_headers(response)
        # Swagger UI loads its script from a CDN and starts it inline: only framing is forbidden there
        docs = client.get("/docs")
        assert docs.status_code == 200
        _assert_headers(docs, policy="frame-ancestors 'none'")


def test_the_policy_forbids_framing_and_foreign_code():
    rules = dict(rule.split(" ", 1) for rule in PAGE_POLICY.split("; "))
    assert rules["frame-ancestors"] == "'none'" and rules["default-src"] == "'none'"
    assert rules["script-src"] == "'self'" and rules["style-src"] == "'self'"
    assert "unsafe" not in PAGE_POLICY and "*" not in PAGE_POLICY and "http" not in PAGE_POLICY


class _InlineCode(HTMLParser):
    """Collects what a policy without 'unsafe-inline' would block: inline scripts, style elements
    and attributes, on* handlers, javascript: links."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag, attrs):
        named = dict(attrs)
        if tag == "script" and "src" not in named:
            self._in_inline_script = True
        if tag == "style":
            self.found.append("<style>")
        for name, value in attrs:
            if name == "style" or name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f'<{tag} {name}="{value}">')

    def handle_data(self, data):
        if self._in_inline_script and data.strip():
            self.found.append(f"<script>{data.strip()[:40]}")

    def handle_endtag(self, tag):
        self._in_inline_script = self._in_inline_script and tag != "script"


def test_the_page_needs_nothing_the_policy_forbids():
    page = _InlineCode()
    page.feed((STATIC_DIR / "index.html").read_text())
    assert page.found == []
    scripts = " ".join(p.read_text() for p in STATIC_DIR.glob("*.js"))
    # eval-like calls and attributes set as text would need 'unsafe-eval' / 'unsafe-inline'
    assert not re.search(r"\beval\(|new Function\(|setAttribute\(\s*[\"'](style|on\w+)[\"']|\.innerHTML\s*=", scripts)
    styles = (STATIC_DIR / "style.css").read_text()
    assert not re.search(r"@import|url\((?!\s*[\"']?data:)", styles), "the styles load nothing from elsewhere"


# ----------------------------------------------------------------------------- the token warning


def test_loopback_addresses_are_this_machine_only():
    assert all(loopback(a) for a in ("127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"))
    assert not any(loopback(a) for a in ("0.0.0.0", "::", "10.0.0.7", "192.168.1.20", "fe80::1", "2001:db8::1"))
    assert not loopback("not-an-address")


def _ipv6() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "host, token, warned",
    [
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("0.0.0.0", "s3cret", False),
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
    ],
)
def test_serve_warns_when_anyone_on_the_network_can_use_it(host, token, warned, caplog, monkeypatch, idle_grader):
    if ":" in host and not _ipv6():
        pytest.skip("this machine has no IPv6")
    monkeypatch.setattr(server_module, "load_grader", lambda *args, **kwargs: idle_grader)
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets: None)
    monkeypatch.setattr(logging.getLogger("imgrade"), "handlers", [])  # a CLI test may have installed its own
    caplog.set_level(logging.INFO, logger="imgrade.serve")
    serve("model.onnx", host=host, port=0, runtime="torch", token=token)
    warnings_logged = [r for r in caplog.records if r.levelno == logging.WARNING]
    if not warned:
        assert warnings_logged == []
        return
    (warning,) = warnings_logged
    message = warning.getMessage()
    assert message.startswith(f"warning: serving on {host} without a token: anyone on the network")
    assert "IMGRADE_TOKEN=" in message and "--token" in message and "--host 127.0.0.1" in message
    assert "\n" not in message
