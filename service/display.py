"""What the page shows around the hits: the metadata fields under each hit (CIR_DISPLAY_FIELDS)
and a background job's status line (CIR_STATUS_FILE), both reported by GET /info."""

from __future__ import annotations

import json

from cir.metadata import OBJECT
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
