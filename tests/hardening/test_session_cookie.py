"""The dashboard session cookie behind a TLS-terminating proxy: the service sees plain HTTP
(the proxy's forwarded headers are not trusted from another host), but the public URL says
the dashboard is served over HTTPS, so the cookie must be `Secure`, or a browser would send it
over any plain-HTTP request to the host and the session could be read off the wire."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.main import create_app
from app.models.project import Role
from tests.conftest import new_key
from tests.web.test_pages import sign_in


def session_cookie(settings: Settings, public_url: str) -> str:
    """The cookie the sign-in page sets (it carries the session's CSRF token), requested over
    plain HTTP as a proxy would forward it."""
    app = create_app(settings.model_copy(update={"public_url": public_url}))
    with TestClient(app, base_url="http://plumbline.internal") as client:
        return str(client.get("/login").headers["set-cookie"])


def test_the_session_cookie_is_secure_when_the_public_url_is_https(settings: Settings) -> None:
    cookie = session_cookie(settings, "https://plumbline.example")
    assert cookie.startswith("plumbline_session=") and "; secure" in cookie.lower(), cookie


def test_a_plain_http_deployment_still_signs_in(settings: Settings) -> None:
    assert "; secure" not in session_cookie(settings, "http://127.0.0.1:8000").lower()
    app = create_app(settings.model_copy(update={"public_url": "http://127.0.0.1:8000"}))
    key = new_key(app, "acme", Role.admin, "acme-admin")
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert sign_in(client, key).status_code == 303
        assert client.get("/", follow_redirects=False).status_code == 200
