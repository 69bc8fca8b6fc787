"""The CIR HTTP service: `create_app(settings)` builds the FastAPI app; `cir serve` runs it.

Modules: settings (CIR_* env config), swap (index watcher / hot swap), api (routes), app
(factory + lifespan), metrics (Prometheus), limits (upload cap), thumbs (thumbnail cache), cli
(`cir serve`). The search engine itself (no HTTP) is the library's `cir.search`.
"""

from service.app import create_app
from service.settings import Settings

__all__ = ["Settings", "create_app"]
