"""What the page shows around the hits: the metadata fields under each hit (CIR_DISPLAY_FIELDS),
a background job's status line (CIR_STATUS_FILE), both reported by GET /info, and every answer's
image URLs (CIR_IMAGE_URL_TEMPLATE, else this server's image routes)."""

from __future__ import annotations

import json

from urllib.parse import quote

from cir.metadata import OBJECT
from cir.search import query as q
from service.faults import public_text

# fields a product gallery usually has, shown when CIR_DISPLAY_FIELDS is not set
PREFERRED_FIELDS = ("title", "name", "price")
AUTO_FIELDS = 3
MAX_STATUS_BYTES = 4096


def display_fields(setting: str | None, fields: dict[str, dict]) -> list[str]:
    """The metadata fields shown under each hit: the setting's, else title/name/price, else the first few."""
    if setting is not None:
        return [f.strip() for f in setting.split(",") if f.strip()]
    usable = [name for name, info in fields.items() if info.get("type") != OBJECT]
    preferred = [name for name in PREFERRED_FIELDS if name in usable]
    return preferred or usable[:AUTO_FIELDS]


def background_message(settings) -> str | None:
    """The message of the status file a background job writes (None when there is none)."""
    path = settings.status_file
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            status = json.loads(fh.read(MAX_STATUS_BYTES + 1)[:MAX_STATUS_BYTES])
    except (OSError, ValueError):  # no job running, or a file being replaced
        return None
    message = status.get("message") if isinstance(status, dict) else None
    return public_text(settings, message) if isinstance(message, str) and message else None


def image_url(settings, item_id: str, image_base: str = "/images") -> str:
    """An item's image URL in every answer (search, browse, items): the template's, else `image_base`/id."""
    if settings.image_url_template:  # images served by a CDN or object store
        return settings.image_url_template.replace("{id}", quote(item_id, safe=""))
    return q.image_url(item_id, image_base)


def set_image_urls(settings, hits: list[dict], image_base: str = "/images") -> list[dict]:
    """Give each hit dict its image URL (image_url above); the same list."""
    for hit in hits:
        hit["image_url"] = image_url(settings, hit["id"], image_base)
    return hits
