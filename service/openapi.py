"""The OpenAPI document generated clients are built from: the search bodies and the API keys.

The search routes read their body themselves (service.search_input), so FastAPI cannot derive
it: their `requestBody` refers to the SearchForm (multipart, images as `format: binary` files)
and SearchJSON (base64 images) components added here. Optional fields are plain types without
`default: null`, which multipart clients could not send.
"""

from __future__ import annotations

from fastapi import FastAPI

from service.search_input import SearchForm, SearchJSON


def _component(model) -> dict:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for prop in schema.get("properties", {}).values():
        if prop.get("default", 0) is None:
            del prop["default"]
    return schema


def _form_component() -> dict:
    schema = _component(SearchForm)
    image = schema["properties"]["image"]
    # binary files, not strings with a contentMediaType: what generators turn into file uploads
    image["items"] = {"type": "string", "format": "binary"}
    return schema


def install_openapi(app: FastAPI) -> None:
    """Make app.openapi() add the search body components to FastAPI's document (built once, then cached)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["SearchForm"] = _form_component()
        components["SearchJSON"] = _component(SearchJSON)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
