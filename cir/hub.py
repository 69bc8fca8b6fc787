"""Hub ids: use the local Hugging Face cache when it has the model, ask huggingface.co once and fast otherwise.

Left to itself, a transformers load of a hub id on a machine without network retries for about
half a minute per file, warns on every retry, then names the wrong cause ("couldn't connect")
for a simple typo, and a missing local folder reads as "Repo id must be in the form ...".
`locate` decides first, with one metadata request (no retries, HF_HUB_ETAG_TIMEOUT seconds):
it returns what transformers should load (the id, or the cached snapshot folder when the hub
cannot be reached or HF_HUB_OFFLINE=1) or raises ModelLoadError saying what to do.
"""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HFValidationError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from huggingface_hub.utils import validate_repo_id

log = logging.getLogger(__name__)

CONFIG = "config.json"


class HubError(RuntimeError):
    """A hub id cannot be used: the message says why and what to do."""


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1 or "\\" in name


def cached_folder(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model (one with config.json), or None."""
    found = try_to_load_from_cache(repo_id, CONFIG)
    return Path(found).parent if isinstance(found, str) else None


def locate(name: str) -> str:
    """What transformers should load for hub id `name`: the id itself or its cached snapshot folder."""
    unknown = f"no local folder or known model named {name!r}"
    if _looks_like_path(name):
        raise HubError(f"{unknown}: there is no such folder")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise HubError(f"{unknown}: it is not a folder, and not a hub id (like openai/clip-vit-base-patch32)") from None
    cached = cached_folder(name)
    if constants.HF_HUB_OFFLINE:
        if cached is not None:
            return str(cached)
        raise HubError(f"{unknown}: it is not a folder and not in the Hugging Face cache ({constants.HF_HUB_CACHE}); "
                       "HF_HUB_OFFLINE=1 is set, so nothing is downloaded")
    try:
        get_hf_file_metadata(hf_hub_url(name, CONFIG), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except GatedRepoError:
        raise HubError(f"{name!r} is gated on huggingface.co: accept its terms there and set HF_TOKEN") from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise HubError(f"{unknown}: not a folder here, and huggingface.co has no such model (or it is private: "
                       "set HF_TOKEN)") from None
    except EntryNotFoundError:
        raise HubError(f"{name!r} on huggingface.co has no {CONFIG}: not a transformers model") from None
    except Exception as exc:  # noqa: BLE001 - the transport's error types (httpx, OSError) vary by version
        if cached is not None:
            log.warning("huggingface.co cannot be reached (%s): loading the cached copy of %s", exc, name)
            return str(cached)
        raise HubError(f"{unknown}: it is not a folder, not in the Hugging Face cache, and huggingface.co cannot "
                       f"be reached ({exc}). No network: set HF_HUB_OFFLINE=1 or give a local model folder") from None
    return name
