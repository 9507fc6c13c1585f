"""The order the domain routers are tried in (app/routes.py) decides only what routing costs: no route of one
router matches a path of another's, and the API is documented in its own order."""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.routing import APIRoute

from app.core.config import Settings
from app.main import create_app
from app.routes import API_PREFIX, DOMAIN_ROUTERS, HOT_ROUTERS, documented_paths


def _overlaps(routers: tuple[APIRouter, ...]) -> list[tuple[str, str]]:
    """(a path of one router, a route of another router that matches it), with each route's path made
    concrete ("1" for every parameter): two routes that share a path both ways round are found."""
    found = []
    routes = [(i, route) for i, r in enumerate(routers) for route in r.routes if isinstance(route, APIRoute)]
    for i, route in routes:
        sample = re.sub(r"{[^}]+}", "1", route.path)
        for j, other in routes:
            if i != j and other.path_regex.match(sample):
                found.append((sample, other.path))
    return found


def test_no_route_of_one_domain_router_matches_a_path_of_another() -> None:
    assert HOT_ROUTERS and all(any(h is r for r in DOMAIN_ROUTERS) for h in HOT_ROUTERS)
    assert _overlaps(DOMAIN_ROUTERS) == []


def test_an_overlap_between_routers_is_found() -> None:
    first, second = APIRouter(prefix="/things"), APIRouter(prefix="/things")

    @first.get("/{thing_id}")
    def one_thing(thing_id: str) -> None: ...

    @second.get("/count")
    def count_things() -> None: ...

    assert _overlaps((first, second)) == [("/things/count", "/things/{thing_id}")]


def test_the_api_is_documented_in_its_own_order_not_the_routing_order(tmp_path: object) -> None:
    app = create_app(Settings(data_dir=str(tmp_path)), workers=False)
    documented = [p for p in app.openapi()["paths"] if p.startswith(API_PREFIX)]
    assert documented == documented_paths()
    tried = [r.original_router for r in app.router.routes if hasattr(r, "original_router")]
    domain = [r for r in tried if any(r is d for d in DOMAIN_ROUTERS)]
    assert len(domain) == len(DOMAIN_ROUTERS) == len({id(r) for r in domain})  # each included once
    assert all(a is b for a, b in zip(domain, HOT_ROUTERS, strict=False))  # the money routes' tried first
    assert documented[0] == f"{API_PREFIX}/auth/register"  # the users' router comes first in DOMAIN_ROUTERS
