"""The OpenAPI document as the service really answers.

- Every refusal is `{"error": Name, "detail": ...}` (`ErrorBody`), documented as the 4XX and 5XX answers
  of every route. FastAPI's default 422 schema (`detail` as a list of validation errors) is not what our
  handler sends, so it is replaced wherever FastAPI still puts it.
- `Idempotency-Key` is required where a route takes it: every such route moves money and refuses a request
  without one (400 `MissingIdempotencyKey`, which the handler answers, not FastAPI's validation).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_MAX_LENGTH = 200  # app/idempotency.py and its column


class ErrorBody(BaseModel):
    """A refused request: nothing was changed."""

    error: str = Field(
        description="the kind of error: ValidationError, Unauthorized, Forbidden, NotFound, Conflict, "
        "InsufficientBalance, BodyTooLarge, ..."
    )
    detail: Any = Field(
        description="what was wrong and why: a sentence, or for ValidationError the list of problems "
        "[{loc, msg, type}]"
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "Refused; `error` names the reason, `detail` explains it"},
    "5XX": {"model": ErrorBody, "description": "The service or the chain could not answer; retry later"},
}

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def install(app: FastAPI, path_order: list[str] | None = None) -> None:
    """Makes `app.openapi()` (and /openapi.json, /docs) serve the corrected document, its paths in
    `path_order` where given (routes may be tried in another order than they are documented in)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = in_order(correct(generate()), path_order or [])
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def in_order(doc: dict[str, Any], path_order: list[str]) -> dict[str, Any]:
    """The document with the paths named in `path_order` in that order, in the places they held among
    the others (which stay where they are)."""
    paths: dict[str, Any] = doc.get("paths", {})
    position = {path: i for i, path in enumerate(path_order)}
    ordered = iter(sorted((p for p in paths if p in position), key=position.__getitem__))
    keys = [next(ordered) if p in position else p for p in paths]
    doc["paths"] = {p: paths[p] for p in keys}
    return doc


def correct(doc: dict[str, Any]) -> dict[str, Any]:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            for status, response in responses.items():
                if status.startswith("4") and _is_fastapi_validation(response):
                    response["content"] = {"application/json": {"schema": dict(_ERROR_REF)}}
            for param in operation.get("parameters", []):
                if param.get("in") == "header" and param.get("name") == IDEMPOTENCY_HEADER:
                    param["required"] = True
                    param["schema"] = {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_MAX_LENGTH}
                    param["description"] = (
                        "any unique string per operation: a retry with the same key and body gets the first "
                        "answer again, never a second operation; without it the route answers 400 "
                        "MissingIdempotencyKey"
                    )
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    return doc


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").rsplit("/", 1)[-1] in _FASTAPI_VALIDATION
