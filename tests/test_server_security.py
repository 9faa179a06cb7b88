"""Exposure, auth on every route, path traversal, CORS, and the serve command's refusals."""

from __future__ import annotations

import httpx
import pytest
import typer
from typer.testing import CliRunner

from depth2img.errors import InvalidRequestError
from depth2img.server.command import serve
from depth2img.server.settings import Settings
from tests.test_server_util import ServerThread, b64, photo_png, settings

USER, PASSWORD = "ada", "s3cret:with-colon"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pipe):
    s = settings(tmp_path_factory.mktemp("sec"), auth=((USER, PASSWORD),), cors_origins=("http://ui.example",))
    with ServerThread(s, preload=tiny_pipe) as server:
        yield server


def routes(server):
    """Every documented route (the OpenAPI schema) plus the docs pages, path parameters filled in."""
    out = [("GET", p) for p in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")]
    for path, methods in server.app.fastapi.openapi()["paths"].items():
        path = path.replace("{job_id}", "0" * 32).replace("{index}", "0")
        out += [(method.upper(), path) for method in methods]
    return out


def test_every_route_needs_auth(server):
    found = routes(server)
    paths = {p for _, p in found}
    assert {"/docs", "/openapi.json", "/api/v1/jobs", "/sdapi/v1/img2img", "/sdapi/v1/progress"} <= paths
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for method, path in found:
            r = c.request(method, path, json={} if method == "POST" else None)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"].startswith("Basic")
            assert PASSWORD not in r.text
        wrong = c.get("/api/v1/health", auth=(USER, "nope"))
        assert wrong.status_code == 401
        for method, path in found:
            if method == "GET" and "{" not in path:
                r = c.get(path, auth=(USER, PASSWORD))
                assert r.status_code in (200, 404, 409), (path, r.status_code)  # 404: a job id that does not exist
        assert c.get("/docs", auth=(USER, PASSWORD)).status_code == 200
        assert c.get("/openapi.json", auth=(USER, PASSWORD)).json()["info"]["title"] == "depth2img"


@pytest.mark.parametrize("path", [
    "/api/v1/jobs/..%2F..%2Fetc%2Fpasswd",
    "/api/v1/jobs/%2e%2e%2fjobs.sqlite3",
    "/api/v1/jobs/..",
    "/api/v1/jobs/" + "0" * 32 + "/images/..%2F..%2Fjobs.sqlite3",
    "/api/v1/jobs/" + "0" * 32 + "/images/-1",
    "/api/v1/jobs/C:%5Cwindows/depth",
    "/api/v1/jobs/%00/events",
    "/api/v1/jobs/../../../../etc/passwd",
])
def test_path_traversal_in_ids_is_not_found(server, path):
    with httpx.Client(base_url=server.url, auth=(USER, PASSWORD), timeout=30) as c:
        r = c.get(path)
        assert r.status_code in (404, 422), (path, r.status_code, r.text)
        assert "root:" not in r.text and "SQLite" not in r.text


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc", "..\\..\\x", "tiny/../tiny", "tiny\x00", "~/models"])
def test_model_names_are_registry_ids_only(server, name):
    with httpx.Client(base_url=server.url, auth=(USER, PASSWORD), timeout=30) as c:
        for body in ({"image": b64(photo_png()), "model": name}, {"image": b64(photo_png()), "depth_model": name}):
            assert c.post("/api/v1/jobs", json=body).status_code == 422
        assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": name}).status_code == 422
        assert c.post("/api/v1/depth", json={"image": b64(photo_png()), "model": name}).status_code == 422


def test_cors_closed_except_the_given_origin(server):
    with httpx.Client(base_url=server.url, auth=(USER, PASSWORD), timeout=30) as c:
        evil = c.post("/api/v1/jobs", json={}, headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
        ok = c.get("/api/v1/health", headers={"Origin": "http://ui.example"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://ui.example"
        preflight = c.options("/api/v1/jobs", headers={"Origin": "http://ui.example",
                                                       "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200


def test_cors_closed_by_default(tmp_path, tiny_pipe):
    with ServerThread(settings(tmp_path), preload=tiny_pipe) as s, httpx.Client(base_url=s.url) as c:
        r = c.get("/api/v1/health", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        assert c.get("/api/v1/health").status_code == 200  # no Origin (not a browser): allowed, no auth on loopback


def test_non_loopback_without_auth_is_refused(tmp_path):
    assert Settings().host == "127.0.0.1"
    for host in ("0.0.0.0", "192.168.1.5", "example.com", "::"):
        with pytest.raises(InvalidRequestError, match="without authentication"):
            Settings(host=host, outputs=tmp_path).check()
    Settings(host="0.0.0.0", auth=(("a", "b"),), outputs=tmp_path).check()
    Settings(host="::1", outputs=tmp_path).check()


def test_serve_command_refuses_before_binding(tmp_path, monkeypatch):
    def must_not_start(settings):
        raise AssertionError(f"serve would have started on {settings.host}")

    monkeypatch.setattr("depth2img.server.command.run", must_not_start)  # never bind, even when a check breaks
    app = typer.Typer()
    app.command("serve")(serve)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    r = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--outputs", str(tmp_path)])
    assert isinstance(r.exception, InvalidRequestError) and "without authentication" in str(r.exception)
    r = runner.invoke(app, ["serve", "--auth", "nopassword", "--outputs", str(tmp_path)])
    assert isinstance(r.exception, InvalidRequestError) and "USER:PASS" in str(r.exception)
    assert "nopassword" not in str(r.exception)
    r = runner.invoke(app, ["serve", "--models-dir", str(tmp_path / "missing"), "--outputs", str(tmp_path)])
    assert isinstance(r.exception, InvalidRequestError) and "--models-dir" in str(r.exception)
    r = runner.invoke(app, ["serve", "--device", "cuda:7", "--outputs", str(tmp_path)])
    assert isinstance(r.exception, InvalidRequestError)
