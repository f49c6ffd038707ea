"""The OpenAPI 3.1 document of the REST API, generated from the endpoint table and the models."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from ..exports import EXPORT_SUFFIXES
from ..listing import RUN_ID_PATTERN
from ..storage import ARTIFACT_FILES
from ..video import MAX_SAMPLE_FPS, MIN_SAMPLE_FPS
from ._plumbing import Endpoint
from ._routes import ENDPOINTS
from ._schemas import ErrorResponse, VideoRunForm

__all__ = ["openapi_document"]

REF = "#/components/schemas/{model}"
_STATUS_WORDS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    206: "Partial content (a Range request)",
    304: "Not modified (If-None-Match matched the ETag)",
    400: "Bad request: a malformed id, query or body",
    401: "Unauthorized: the bearer token is missing or wrong",
    403: "Forbidden: no token is set and the client is not this machine",
    404: "Not found",
    409: "Conflict: the run's state does not allow this",
    413: "Request too large",
    415: "Unsupported media type",
    416: "Range not satisfiable",
    500: "Server error",
    502: "The backend failed",
    503: "Not configured, or busy",
}
_FILE = {"type": "string", "format": "binary"}


def _models() -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    found: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (ErrorResponse, "serialization"): None
    }
    for spec in ENDPOINTS:
        if isinstance(spec.body, type):
            found[(spec.body, "validation")] = None
        if spec.query is not None:
            found[(spec.query, "validation")] = None
        for model in spec.responses.values():
            if isinstance(model, type):
                found[(model, "serialization")] = None
    return list(found)


def _parameters(
    spec: Endpoint, refs: Mapping[Any, dict[str, Any]], defs: dict[str, Any]
) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    if "{runId}" in spec.path:
        params.append(
            {
                "name": "runId",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": f"^{RUN_ID_PATTERN.pattern}$"},
                "description": "run_<epoch ms>_<6 of a-z0-9>",
            }
        )
    if "{type}" in spec.path:
        params.append(
            {
                "name": "type",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": list(ARTIFACT_FILES)},
            }
        )
    if "{number}" in spec.path:
        params.append(
            {
                "name": "number",
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": 999_999_999},
                "description": "The version's number (1 is the reconstruction).",
            }
        )
    if "{format}" in spec.path:
        params.append(
            {
                "name": "format",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": list(EXPORT_SUFFIXES)},
                "description": "colmap and nerfstudio come as a zip, cameras as JSON.",
            }
        )
    if spec.query is not None:
        name = refs[(spec.query, "validation")]["$ref"].rsplit("/", 1)[-1]
        schema = defs[name]
        for prop, prop_schema in schema.get("properties", {}).items():
            params.append(
                {
                    "name": prop,
                    "in": "query",
                    "required": prop in schema.get("required", []),
                    "schema": {k: v for k, v in prop_schema.items() if k != "description"},
                    "description": prop_schema.get("description", ""),
                }
            )
    return params


def _operation(
    spec: Endpoint, refs: Mapping[Any, dict[str, Any]], defs: dict[str, Any]
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, model in spec.responses.items():
        entry: dict[str, Any] = {"description": _STATUS_WORDS.get(status, "")}
        if model == "file":
            entry["content"] = {"application/octet-stream": {"schema": _FILE}}
            entry["content"].update({"model/gltf-binary": {"schema": _FILE}})
        elif isinstance(model, type):
            entry["content"] = {"application/json": {"schema": refs[(model, "serialization")]}}
        elif status != 304:
            entry["content"] = {"application/json": {"schema": {"type": "object"}}}
        responses[str(status)] = entry
    error_ref = refs[(ErrorResponse, "serialization")]
    for status in sorted(set(spec.errors)):
        responses[str(status)] = {
            "description": _STATUS_WORDS.get(status, "Error"),
            "content": {"application/json": {"schema": error_ref}},
        }
    operation: dict[str, Any] = {
        "operationId": spec.handler.__name__,
        "summary": spec.summary,
        "tags": list(spec.tags),
        "parameters": _parameters(spec, refs, defs),
        "responses": responses,
    }
    if isinstance(spec.body, type):
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": refs[(spec.body, "validation")]}},
        }
    elif spec.body == "multipart":
        operation["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"images": {"type": "array", "items": _FILE}},
                        "required": ["images"],
                        "description": "One or many image files, under any field name "
                        "('images' or 'files' by convention).",
                    }
                }
            },
        }
    elif spec.body == "video":
        fields: dict[str, Any] = {
            "settings": {"type": "string", "description": "The settings as a JSON object."},
            "fps": {"type": "number", "minimum": MIN_SAMPLE_FPS, "maximum": MAX_SAMPLE_FPS},
            "presize": {"type": "boolean"},
        }
        for name, info in VideoRunForm.model_fields.items():
            fields[name]["description"] = info.description or ""
        operation["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"video": _FILE, **fields},
                        "required": ["video"],
                        "description": "One video file (mp4, mov, webm, mkv) and optional "
                        "fields: settings (JSON), fps, presize (true/false).",
                    }
                }
            },
        }
    return operation


@functools.cache
def _document(prefix: str) -> dict[str, Any]:
    refs, top = models_json_schema(_models(), ref_template=REF)
    defs: dict[str, Any] = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for spec in ENDPOINTS:
        operation = _operation(spec, refs, defs)
        paths.setdefault(f"{prefix}{spec.path}", {})[spec.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "VGGT Studio API",
            "version": "1",
            "description": "Runs of VGGT 3D reconstructions: create, upload images, process, "
            "follow, download. Errors are {error, details}. With VGGT_API_TOKEN set on the "
            "server every call needs 'Authorization: Bearer <token>'; without it only this "
            "machine is answered.",
        },
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}, {}],
    }


def openapi_document(prefix: str = "/api") -> dict[str, Any]:
    """The OpenAPI document for the API mounted at `prefix` (a fresh copy each call)."""
    import copy

    return copy.deepcopy(_document(prefix))
