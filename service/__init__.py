"""The CIR HTTP service: `create_app(settings)` builds the FastAPI app; `cir serve` runs it.

Modules: settings (CIR_* env config), swap (index watcher / hot swap), galleries (one manager
per gallery, shared encoders), api (routes), collections (/collections/{name}/... routes),
search_input (multipart and JSON search bodies), openapi (the search bodies in the schema), auth
(keys), app (factory + lifespan), metrics (Prometheus), limits (upload cap), thumbs (thumbnail
cache), cli (`cir serve`). The search engine itself (no HTTP) is the library's `cir.search`.
"""

from __future__ import annotations

import importlib

# Loaded on first use (PEP 562): `cir serve --help` imports service.cli and service.settings,
# which must not pull in FastAPI and torch with the app.
_WHERE = {"create_app": "service.app", "Settings": "service.settings"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'service' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
