"""Generated from the app's route table, so a route added later cannot skip authorization:
every API route demands a key with a role; no key, a revoked key or a too-weak role is
refused; and a key of project B can neither read nor change anything of project A."""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.auth import authenticate
from app.keys import service as keys
from app.models import Base
from app.models.project import Role
from tests.conftest import new_key

# Strings that exist only in project A: none may appear in a successful answer to B.
# Domains that seed more of A's data name it with the "alpha-secret" prefix too.
MARKERS = ("alpha-secret", "alpha-v1", "alpha-v2")

# Routes outside /api/v1 that carry project data and so must authorize too.
EXTRA_PROTECTED_PREFIXES: tuple[str, ...] = ()


def domain_samples() -> list[ModuleType]:
    """Each domain keeps its own `tests/**/authz_samples.py`: `ORDER` (seeding order),
    `seed(client, auth, ids)` adding A's resources and their path-parameter values to `ids`,
    and `BODIES`, a mapping (method, path) -> function(ids) -> a well-formed body."""
    modules = []
    for path in sorted(Path(__file__).parent.rglob("authz_samples.py")):
        name = ".".join(path.relative_to(Path(__file__).parent.parent).with_suffix("").parts)
        modules.append(importlib.import_module(name))
    return sorted(modules, key=lambda module: module.ORDER)


def seed_project_a(client: TestClient, key: str) -> dict[str, Any]:
    """One of everything in project A, made through the public API."""
    auth = {"Authorization": f"Bearer {key}"}
    v1 = client.post(
        "/api/v1/checkpoints",
        json={"model": "alpha-secret-model", "version": "alpha-v1"},
        headers=auth,
    ).json()
    v2 = client.post(
        "/api/v1/checkpoints",
        json={"model": "alpha-secret-model", "version": "alpha-v2", "parent": v1["id"]},
        headers=auth,
    ).json()
    client.post(
        "/api/v1/models/alpha-secret-model/promote",
        json={"checkpoint_id": v1["id"], "reason": "first"},
        headers=auth,
    )
    key_id = client.get("/api/v1/keys", headers=auth).json()["items"][0]["id"]
    ids: dict[str, Any] = {"checkpoint_id": v2["id"], "model": "alpha-secret-model"}
    ids["key_id"] = key_id
    for module in domain_samples():
        module.seed(client, auth, ids)
    return ids


def sample_body(method: str, path: str, ids: dict[str, Any]) -> dict[str, Any] | None:
    """A well-formed body for each route that takes one, referring to A's resources by id."""
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/api/v1/checkpoints"): {"model": "b-model", "version": "b1"},
        ("POST", "/api/v1/models/{model}/promote"): {
            "checkpoint_id": ids["checkpoint_id"],
            "force": True,
            "reason": "takeover",
        },
        ("POST", "/api/v1/models/{model}/rollback"): {"reason": "takeover"},
        ("PUT", "/api/v1/checkpoints/{checkpoint_id}/pricing"): {
            "usd_per_million_input_tokens": 0,
            "usd_per_million_output_tokens": 0,
        },
        ("POST", "/api/v1/keys"): {"name": "b", "role": "admin"},
    }
    for module in domain_samples():
        if (method, path) in module.BODIES:
            return module.BODIES[(method, path)](ids)  # type: ignore[no-any-return]
    return bodies.get((method, path))


def protected_routes(app: FastAPI) -> Iterator[tuple[str, RouteContext]]:
    # FastAPI >= 0.165 keeps included routers as `_IncludedRouter` entries in `app.routes`;
    # iter_route_contexts flattens them into routes with their full, prefixed paths.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        if route.path.startswith("/api/") or route.path.startswith(EXTRA_PROTECTED_PREFIXES):
            for method in sorted(route.methods):
                yield method, route


def required_role(route: RouteContext) -> Role | None:
    for dependency in route.dependant.dependencies:
        role = getattr(dependency.call, "required_role", None)
        if role is not None:
            return role
    return None


def fill_path(path: str, ids: dict[str, Any]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", str(value))
        path = path.replace("{" + name + ":path}", str(value))
    assert "{" not in path, f"add a sample value for the path parameters of {path}"
    return path


def fingerprint(app: FastAPI, project_id: int) -> str:
    """A digest of every project-owned row of project A (key usage timestamps aside)."""
    digest = hashlib.sha256()
    with app.state.sessionmaker() as session:
        for table in Base.metadata.sorted_tables:
            if "project_id" not in table.c:
                continue
            columns = [c for c in table.c if c.name != "last_used_at"]
            rows = session.execute(
                select(*columns)
                .where(table.c.project_id == project_id)
                .order_by(*table.primary_key.columns)
            ).all()
            digest.update(json.dumps([table.name, [list(r) for r in rows]], default=str).encode())
    return digest.hexdigest()


def call(client: TestClient, method: str, path: str, body: Any, key: str | None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.request(method, path, json=body, headers=headers)


def test_every_api_route_demands_a_role(app: FastAPI) -> None:
    walked = {route.path for _method, route in protected_routes(app)}
    assert {"/api/v1/checkpoints", "/api/v1/events"} <= walked, "the route walk found nothing"
    unprotected = [
        f"{method} {route.path}"
        for method, route in protected_routes(app)
        if required_role(route) is None
    ]
    assert unprotected == []


def test_no_key_revoked_key_and_weak_roles_are_refused(app: FastAPI, client: TestClient) -> None:
    admin = new_key(app, "alpha", Role.admin, "alpha-admin")
    ids = seed_project_a(client, admin)
    revoked = new_key(app, "alpha", Role.admin, "to-revoke")
    with app.state.sessionmaker() as session:
        project_id = authenticate(session, revoked).project_id
        keys.revoke_named(session, project_id, "to-revoke")
        session.commit()
    weak = {Role.read: None, Role.write: new_key(app, "alpha", Role.read, "reader")}
    weak[Role.admin] = new_key(app, "alpha", Role.write, "writer")
    for method, route in protected_routes(app):
        path = fill_path(route.path, ids)
        body = sample_body(method, route.path, ids)
        for key in (None, revoked, "pl_0000000000_forged", "not-a-key"):
            response = call(client, method, path, body, key)
            assert response.status_code == 401, f"{method} {route.path} with key {key!r}"
            assert response.headers["content-type"] == "application/problem+json"
        role = required_role(route)
        assert role is not None
        too_weak = weak[role]
        if too_weak is not None:
            response = call(client, method, path, body, too_weak)
            assert response.status_code == 403, f"{method} {route.path} with a weaker role"


def test_a_key_of_another_project_sees_and_changes_nothing(
    app: FastAPI, client: TestClient
) -> None:
    alpha_key = new_key(app, "alpha", Role.admin, "alpha-admin")
    ids = seed_project_a(client, alpha_key)
    with app.state.sessionmaker() as session:
        alpha_id = authenticate(session, alpha_key).project_id
    before = fingerprint(app, alpha_id)
    bravo_key = new_key(app, "bravo", Role.admin, "bravo-admin")
    for method, route in protected_routes(app):
        path = fill_path(route.path, ids)
        response = call(client, method, path, sample_body(method, route.path, ids), bravo_key)
        assert response.status_code < 500, f"{method} {route.path}: {response.text}"
        if response.status_code < 300:
            leaked = [m for m in MARKERS if m in response.text]
            assert leaked == [], f"{method} {route.path} leaked {leaked}"
        elif "{" in route.path:
            assert response.status_code in (404, 409, 422), f"{method} {route.path}"
    assert fingerprint(app, alpha_id) == before


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key", "api_key"])
def test_the_key_may_come_in_any_supported_header(
    client: TestClient, admin_key: str, header: str
) -> None:
    value = f"Bearer {admin_key}" if header == "Authorization" else admin_key
    assert client.get("/api/v1/checkpoints", headers={header: value}).status_code == 200
