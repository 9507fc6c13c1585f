"""The web dashboard: one static page at `/`, its modules and styles under `/ui/`, uPlot from node_modules;
and the API docs at `/docs` (Swagger UI from node_modules too, so they work without internet).

No build step: the browser loads plain ES modules. Files are served only from an allow-listed folder
(static/) and a fixed vendor map, never from a path the request names outside them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from app.core.config import PROJECT_ROOT
from app.core.errors import NotFound

STATIC = Path(__file__).resolve().parent / "static"
UPLOT_DIST = PROJECT_ROOT / "node_modules" / "uplot" / "dist"
SWAGGER_DIST = PROJECT_ROOT / "node_modules" / "swagger-ui-dist"
VENDOR = {
    "uplot/uPlot.esm.js": UPLOT_DIST / "uPlot.esm.js",
    "uplot/uPlot.min.css": UPLOT_DIST / "uPlot.min.css",
    "swagger-ui/swagger-ui-bundle.js": SWAGGER_DIST / "swagger-ui-bundle.js",
    "swagger-ui/swagger-ui.css": SWAGGER_DIST / "swagger-ui.css",
}
DOCS_REDIRECT = "/docs/oauth2-redirect"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
}
# Everything the page needs comes from this origin; the inline-free page lets the policy forbid scripts
# and styles from anywhere else (uPlot sets element styles through the CSSOM, which the policy allows).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

router = APIRouter(include_in_schema=False)


class AssetNotFound(NotFound):
    """No such file in the dashboard."""


def _file(path: Path, *, cache: str) -> Response:
    media_type = TYPES.get(path.suffix)
    if media_type is None or not path.is_file():
        raise AssetNotFound("no such asset")
    # no-cache: the browser revalidates with the ETag FileResponse sets, so a deploy is seen at once.
    return FileResponse(path, media_type=media_type, headers={**SECURITY_HEADERS, "Cache-Control": cache})


@router.get("/")
def index() -> Response:
    return _file(STATIC / "index.html", cache="no-cache")


@router.get("/favicon.ico")
def favicon() -> Response:
    return _file(STATIC / "icon.svg", cache="max-age=86400")


@router.get("/docs")
def api_docs() -> HTMLResponse:
    """Swagger UI over /openapi.json, every asset from this origin (FastAPI's default loads a CDN)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="ESSX API",
        swagger_js_url="/ui/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url="/ui/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url="/favicon.ico",
        oauth2_redirect_url=DOCS_REDIRECT,
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
    )


@router.get(DOCS_REDIRECT)
def api_docs_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/ui/vendor/{name:path}")
def vendor(name: str) -> Response:
    path = VENDOR.get(name)
    if path is None:
        raise AssetNotFound("no such asset")
    return _file(path, cache="max-age=86400")  # pinned in package-lock.json: changes only on upgrade


@router.get("/ui/{name:path}")
def asset(name: str) -> Response:
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC) or any(part.startswith(".") for part in Path(name).parts):
        raise AssetNotFound("no such asset")
    return _file(path, cache="no-cache")
