"""A small typed client of the CIR HTTP API (httpx): `Client` (sync) and `AsyncClient`.

    from cir.client import Client

    with Client("http://127.0.0.1:8000", api_key=None) as cir:
        page = cir.search(image="shoe.jpg", text="in red", filter={"price": {"lt": 50}}, k=20)
        for hit in page.results:
            print(hit.rank, hit.id, round(hit.score, 3), hit.metadata)
        more = cir.search(image="shoe.jpg", text="in red", k=20, offset=page.next_offset)

Images go up as multipart files; a query without images is sent as JSON. `collection` picks a
gallery of a server that serves several (/collections/{name}/...). Every error answer raises
CIRError with the server's status, `error` code and detail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator
from urllib.parse import quote

import httpx

ImageInput = bytes | str | Path  # image bytes, or a local file's path (never a URL: the server fetches nothing)


class CIRError(RuntimeError):
    """An error answer of the server: HTTP status, its `error` code and `detail`."""

    def __init__(self, status: int, code: str, detail: Any):
        self.status, self.code, self.detail = status, code, detail
        super().__init__(f"HTTP {status} {code}: {detail}")


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    rank: int
    image_url: str
    width: int | None = None
    height: int | None = None
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SearchPage:
    """One page of results; `next_offset` is None on the last page."""

    results: list[Hit]
    offset: int
    next_offset: int | None
    index_version: str
    alpha: float
    fusion: str
    references: int = 0
    warnings: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: dict) -> "SearchPage":
        """A page from POST /search's JSON answer."""
        return cls(results=[Hit(**h) for h in body["results"]], offset=body.get("offset", 0),
                   next_offset=body.get("next_offset"), index_version=body["index_version"], alpha=body["alpha"],
                   fusion=body["fusion"], references=body.get("references", 0),
                   warnings=body.get("warnings", []), timings_ms=body.get("timings_ms", {}))


def _image_bytes(image: ImageInput) -> bytes:
    return image if isinstance(image, bytes) else Path(image).expanduser().read_bytes()


def _listed(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def search_request(image=None, reference_id=None, text: str | None = None, *, k: int = 10, offset: int = 0,
                   filter: dict | None = None, image_weights=None, **options) -> dict:
    """httpx request arguments for POST /search (multipart with images, else JSON); options: alpha, fusion,
    min_score, negative_text, negative_weight, exclude_ids, keep_references."""
    images = [_image_bytes(i) for i in _listed(image)]
    for key in ("negative_text", "exclude_ids"):
        options[key] = _listed(options.get(key)) or None
    fields = {"reference_id": _listed(reference_id), "text": text, "k": k, "offset": offset, **options}
    fields = {key: value for key, value in fields.items() if value is not None and value != []}
    if not images:
        body = {**fields, "filter": filter, "image_weights": _listed(image_weights) or None}
        return {"json": {key: value for key, value in body.items() if value is not None}}
    data = {key: [str(v) for v in value] if isinstance(value, list) else str(value).lower()
            if isinstance(value, bool) else str(value) for key, value in fields.items()}
    if filter is not None:
        data["filter"] = json.dumps(filter)
    if image_weights is not None:
        data["image_weights"] = ",".join(str(float(w)) for w in _listed(image_weights))
    return {"data": data, "files": [("image", (f"image{i}", b, "application/octet-stream"))
                                    for i, b in enumerate(images)]}


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            body = response.json()
            code, detail = body.get("error", "error"), body.get("detail")
        except ValueError:
            code, detail = "error", response.text[:500]
        raise CIRError(response.status_code, code, detail)
    return response


class _Base:
    def __init__(self, base_url: str, api_key: str | None, collection: str | None):
        self.base_url = base_url.rstrip("/")
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.prefix = f"/collections/{quote(collection, safe='')}" if collection else ""

    def _image_path(self, item: str | Hit, size: int | None) -> tuple[str, dict]:
        url = item.image_url if isinstance(item, Hit) else f"{self.prefix}/images/{quote(item, safe='')}"
        return url, ({"size": size} if size else {})


class Client(_Base):
    """Synchronous client; use as a context manager or call close()."""

    def __init__(self, base_url: str, api_key: str | None = None, collection: str | None = None,
                 timeout: float = 60.0, **httpx_options):
        super().__init__(base_url, api_key, collection)
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout, **httpx_options)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def search(self, image=None, reference_id=None, text: str | None = None, **query) -> SearchPage:
        """One page of a composed search (see search_request for the fields)."""
        response = self.http.post(f"{self.prefix}/search", **search_request(image, reference_id, text, **query))
        return SearchPage.from_json(_checked(response).json())

    def pages(self, image=None, reference_id=None, text: str | None = None, **query) -> Iterator[SearchPage]:
        """Every page of a search, following next_offset."""
        offset = query.pop("offset", 0)
        while offset is not None:
            page = self.search(image, reference_id, text, offset=offset, **query)
            yield page
            offset = page.next_offset

    def image(self, item: str | Hit, size: int | None = None) -> bytes:
        """A gallery image's bytes (a thumbnail of at least `size` pixels when given)."""
        url, params = self._image_path(item, size)
        return _checked(self.http.get(url, params=params)).content

    def facets(self) -> dict:
        """The filterable fields with their facets."""
        return _checked(self.http.get(f"{self.prefix}/facets")).json()

    def info(self) -> dict:
        """The served model and index."""
        return _checked(self.http.get(f"{self.prefix}/info")).json()

    def collections(self) -> list[dict]:
        """The galleries the server searches."""
        return _checked(self.http.get("/collections")).json()["collections"]


class AsyncClient(_Base):
    """Asynchronous client (httpx.AsyncClient); use `async with` or await aclose()."""

    def __init__(self, base_url: str, api_key: str | None = None, collection: str | None = None,
                 timeout: float = 60.0, **httpx_options):
        super().__init__(base_url, api_key, collection)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout, **httpx_options)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def search(self, image=None, reference_id=None, text: str | None = None, **query) -> SearchPage:
        """One page of a composed search (see search_request for the fields)."""
        response = await self.http.post(f"{self.prefix}/search", **search_request(image, reference_id, text, **query))
        return SearchPage.from_json(_checked(response).json())

    async def pages(self, image=None, reference_id=None, text: str | None = None, **query) -> AsyncIterator[SearchPage]:
        """Every page of a search, following next_offset."""
        offset = query.pop("offset", 0)
        while offset is not None:
            page = await self.search(image, reference_id, text, offset=offset, **query)
            yield page
            offset = page.next_offset

    async def image(self, item: str | Hit, size: int | None = None) -> bytes:
        """A gallery image's bytes (a thumbnail of at least `size` pixels when given)."""
        url, params = self._image_path(item, size)
        return _checked(await self.http.get(url, params=params)).content

    async def facets(self) -> dict:
        """The filterable fields with their facets."""
        return _checked(await self.http.get(f"{self.prefix}/facets")).json()

    async def info(self) -> dict:
        """The served model and index."""
        return _checked(await self.http.get(f"{self.prefix}/info")).json()

    async def collections(self) -> list[dict]:
        """The galleries the server searches."""
        return _checked(await self.http.get("/collections")).json()["collections"]
