"""The OpenAPI document tells the truth, and /docs works without internet.

- refusals are documented as `{"error", "detail"}`, the shape the handlers send (FastAPI's default claims
  a 422's `detail` is always a list);
- `Idempotency-Key` is documented as required where the route refuses a request without it;
- every route has a summary of its own (not FastAPI's title-cased function name);
- /docs references only assets of this origin, and they are served (FastAPI's default page loads Swagger UI
  from a CDN, blank offline).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from app.core.config import PROJECT_ROOT, Settings
from app.main import create_app
from tests.api.helpers import login, register

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings(), workers=False).openapi()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in doc["paths"].items() for m, op in ops.items() if m in METHODS]


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its $refs pointing into the document's components, for jsonschema."""
    return {**schema, "components": doc["components"]}


def test_every_route_has_a_summary_of_its_own(document: dict[str, Any]) -> None:
    missing = []
    for method, path, op in operations(document):
        # FastAPI's operationId is the function name, then the path, then the method
        suffix = re.sub(r"\W", "_", path) + "_" + method
        name = op["operationId"].removesuffix(suffix)
        fallback = name.replace("_", " ").title()
        if not op.get("summary") or op["summary"] == fallback:
            missing.append(f"{method.upper()} {path}")
    assert not missing, f"routes without an explicit summary: {missing}"
    assert len(operations(document)) > 50


def test_errors_are_documented_in_their_real_shape(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    assert "HTTPValidationError" not in text
    error = document["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error", "detail"}
    for method, path, op in operations(document):
        if not path.startswith("/api/"):
            continue
        responses = op["responses"]
        assert "4XX" in responses, f"{method.upper()} {path} documents no refusal"
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)


def test_a_real_validation_error_matches_the_documented_schema(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    documented = doc["paths"]["/api/v1/auth/register"]["post"]["responses"]["4XX"]
    schema = resolve(doc, documented["content"]["application/json"]["schema"])
    r = client.post("/api/v1/auth/register", json={"email": "not an e-mail"})
    assert r.status_code == 422
    jsonschema.validate(r.json(), schema)
    assert isinstance(r.json()["detail"], list)
    r = client.get("/api/v1/users/me")
    assert r.status_code == 401
    jsonschema.validate(r.json(), schema)  # a sentence as detail fits the same schema


def test_idempotency_key_is_documented_as_required_where_it_is(document: dict[str, Any]) -> None:
    with_key = []
    for method, path, op in operations(document):
        for param in op.get("parameters", []):
            if param["name"] == "Idempotency-Key":
                assert param["in"] == "header" and param["required"] is True, (method, path)
                assert param["schema"]["maxLength"] == 200
                with_key.append(f"{method.upper()} {path}")
    assert sorted(with_key) == [
        "POST /api/v1/admin/coin/burn",
        "POST /api/v1/admin/coin/mint",
        "POST /api/v1/admin/coin/pause",
        "POST /api/v1/admin/coin/unpause",
        "POST /api/v1/orders",
        "POST /api/v1/transfers",
    ]


def test_a_missing_idempotency_key_is_still_the_routes_own_400(client: TestClient) -> None:
    headers = login(client, register(client)["email"])
    r = client.post("/api/v1/transfers", json={"to": 1, "amount": "1"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "MissingIdempotencyKey"


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def test_docs_reference_only_assets_served_here(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assets = _Assets()
    assets.feed(page.text)
    assert len(assets.urls) >= 3
    for url in assets.urls:
        assert url.startswith("/") and not url.startswith("//"), f"/docs loads {url} from elsewhere"
        r = client.get(url)
        assert r.status_code == 200, url
        assert len(r.content) > 100, url
    types = {url.rsplit(".", 1)[-1]: client.get(url).headers["content-type"] for url in assets.urls}
    assert types["js"].startswith("text/javascript") and types["css"].startswith("text/css")
    inline = "".join(assets.scripts)
    assert "SwaggerUIBundle" in inline and not re.search(r"https?://", inline)
    assert "'/openapi.json'" in inline and client.get("/openapi.json").status_code == 200
    redirect = client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200 and not re.search(r"(src|href)=\"?https?://", redirect.text)
    assert client.get("/redoc").status_code == 404  # off: it would need a CDN too


def test_swagger_ui_is_pinned_and_installed_from_the_lock() -> None:
    package = json.loads((PROJECT_ROOT / "package.json").read_text())
    version = package["dependencies"]["swagger-ui-dist"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "pin an exact version"
    lock = json.loads((PROJECT_ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/swagger-ui-dist"]["version"] == version
    assert package["scarfSettings"] == {"enabled": False}  # its dependency would report installs otherwise
    installed = json.loads(Path(PROJECT_ROOT / "node_modules/swagger-ui-dist/package.json").read_text())
    assert installed["version"] == version
