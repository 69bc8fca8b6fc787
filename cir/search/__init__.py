"""The search engine, shared by `cir serve` and `cir search`: encoder + loaded index + fusion, no HTTP.

Modules: query (what a query is, its results and errors), engine (`SearchEngine`: the exact
one-by-one path and the micro-batched path), batching (the micro-batcher).
"""

from cir.search.engine import SearchEngine
from cir.search.query import Hit, IndexState, Query, QueryError, SearchResult

__all__ = ["Hit", "IndexState", "Query", "QueryError", "SearchEngine", "SearchResult"]
