"""Service configuration: every option is an environment variable with the `CIR_` prefix."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cir.defaults import FUSIONS, is_remote_store
from cir.runtimes import DEFAULT_RUNTIME, check_runtime


NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"


class Settings(BaseSettings):
    """Settings of `cir serve`; CLI flags override the `CIR_*` environment variables."""

    # An empty variable means "not set" (compose passes unset host variables as empty strings).
    model_config = SettingsConfigDict(env_prefix="CIR_", extra="ignore", protected_namespaces=(),
                                      env_ignore_empty=True)

    index: Path | None = Field(None, description="index root (holds CURRENT and versions/)")
    index_name: str = Field("default", pattern=NAME_PATTERN,
                            description="the name of the `index` gallery under /collections/{name}")
    collections: dict[str, Path] = Field(default_factory=dict,
                                         description="more galleries: name -> index root (JSON object); each "
                                                     "answers on /collections/{name}/...")
    store: str | None = Field(None, description="the gallery store instead of --index: an index root, or "
                                                "milvus://HOST:PORT/NAME (token from CIR_MILVUS_TOKEN)")
    image_url_template: str | None = Field(None, description="results' image_url from this template, e.g. "
                                                             "https://cdn.example/{id} (default: /images/{id})")
    wait_for_index: bool = Field(False, description="start unready on a root with no published version "
                                                    "(or no folder yet) and serve the first one published")
    model: str | None = Field(None, description="model override; default: the model in the index manifest")
    adapter: str | None = Field(None, description="LoRA adapter override; default: the manifest's adapter")
    device: str = Field("auto", description="torch device: auto, cpu, cuda, cuda:1, ...")
    dtype: str = Field("auto", description="autocast dtype: auto (bf16 on GPU), float32, bfloat16, float16")
    runtime: str = Field(DEFAULT_RUNTIME, description="encoder runtime: torch or onnx (ONNX Runtime, CPU)")
    onnx_cache: Path | None = Field(None, description="cached ONNX exports (default ~/.cache/cir/onnx)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"
    max_upload_mb: float = Field(10.0, gt=0, description="largest accepted image upload (MiB)")
    max_total_upload_mb: float = Field(32.0, gt=0, description="largest total of the images in one request (MiB)")
    max_pixels: int = Field(40_000_000, gt=0, description="decompression-bomb guard: most pixels per image")
    max_text_chars: int = Field(2000, gt=0, description="longest accepted modification text (characters)")
    max_batch: int = Field(32, ge=1, le=4096, description="largest micro-batch per forward pass / search")
    batch_wait_ms: float = Field(2.0, ge=0, description="longest wait to fill a micro-batch")
    max_queue: int = Field(1024, ge=1, description="queued encodes per batcher before answering 503")
    decode_workers: int = Field(4, ge=1, description="threads decoding and preprocessing uploads")
    decode_memory_mb: float = Field(256.0, gt=0, description="most memory (MiB) the images being decoded at "
                                                             "once may take; a big decode waits for room")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    max_header_kb: int = Field(64, ge=1, le=1024, description="most KiB of request line and headers (else 431)")
    header_timeout_s: float = Field(10.0, gt=0, description="seconds a client has to send its request headers")
    body_timeout_s: float = Field(30.0, gt=0, description="longest wait for the next piece of a request body")
    keep_alive_s: float = Field(5.0, gt=0, description="seconds an idle keep-alive connection stays open")
    request_timeout_s: float = Field(60.0, gt=0, description="overall deadline of a request, from its first byte "
                                                            "to the start of its answer (408 or 503 after)")
    limit_concurrency: int | None = Field(1000, ge=1, description="most connections/requests at once (then 503)")
    api_key: SecretStr | None = Field(None, description="key(s) required by /admin/* and write routes (X-API-Key "
                                                        "or Bearer); comma-separated to rotate")
    read_api_key: SecretStr | None = Field(None, description="key(s) required by search, images, facets, info and "
                                                             "metrics when set; comma-separated to rotate")
    cors_origins: str = Field("", description="comma-separated allowed CORS origins ('*' for any)")
    reload_interval_s: float = Field(2.0, ge=0, description="how often ROOT/CURRENT is checked; 0 disables")
    default_alpha: float | None = Field(None, ge=0, le=1, description="text weight when a request gives none")
    default_fusion: str = "slerp"
    thumb_cache: Path | None = Field(None, description="thumbnail cache folder (default: a temp folder)")
    thumb_cache_mb: float = Field(256.0, gt=0, description="most thumbnail bytes kept (MiB; least recently used go)")
    thumb_cache_files: int = Field(10_000, ge=1, description="most thumbnail files kept")
    display_fields: str | None = Field(None, description="comma-separated metadata fields the page shows under "
                                                         "each hit, e.g. title,price (default: title, name and "
                                                         "price when the index has them, else its first 3 fields)")
    status_file: Path | None = Field(None, description="a JSON file {\"message\": ...} a background job keeps "
                                                       "up to date; /info and the page show its message")
    writes: str = Field("auto", description="live writes (PUT/PATCH/DELETE /items): auto (take them unless another "
                                            "server of the root does), on (refuse to start otherwise) or off")
    max_bulk_ops: int = Field(100_000, ge=1, description="most operations in one POST /items/bulk")
    compact_pending: int = Field(10_000, ge=0, description="compact when this many live changes are pending (0: never)")
    compact_age_s: float = Field(3600.0, ge=0, description="compact when the oldest pending change is this old (0: never)")
    compact_check_s: float = Field(5.0, gt=0, description="how often the compaction thresholds are checked")
    feedback_dir: Path | None = Field(None, description="log searches and POST /feedback here (docs/supervised.md); "
                                                        "unset: feedback is off")
    feedback_keep_uploads: bool = Field(False, description="keep uploaded query images in the feedback log "
                                                           "(else only their SHA-256)")
    feedback_max_mb: float = Field(1024.0, gt=0, description="most MiB the feedback log keeps (oldest files go)")
    feedback_max_age_days: float = Field(90.0, gt=0, description="days a feedback log file is kept")

    @field_validator("default_fusion")
    @classmethod
    def _known_fusion(cls, value: str) -> str:
        if value not in FUSIONS:
            raise ValueError(f"unknown fusion {value!r}; choose one of {', '.join(FUSIONS)}")
        return value

    @field_validator("collections")
    @classmethod
    def _named(cls, value: dict[str, Path]) -> dict[str, Path]:
        bad = [name for name in value if not re.fullmatch(NAME_PATTERN, name)]
        if bad:
            raise ValueError(f"collection names are 1-64 letters, digits, '-' or '_': {bad[0]!r}")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> "Settings":
        if self.index_name in self.collections:
            raise ValueError(f"collection name {self.index_name!r} is given twice")
        return self

    @field_validator("writes")
    @classmethod
    def _known_writes(cls, value: str) -> str:
        if value not in ("auto", "on", "off"):
            raise ValueError(f"writes must be auto, on or off, got {value!r}")
        return value

    @field_validator("image_url_template")
    @classmethod
    def _template_names_id(cls, value: str | None) -> str | None:
        if value is not None and "{id}" not in value:
            raise ValueError("the image URL template must contain {id}, e.g. https://cdn.example/{id}")
        return value or None

    @property
    def store_location(self) -> str | Path | None:
        """Where the gallery lives: --store (a milvus:// URL or a folder), else the --index root."""
        if self.store is None:
            return self.index
        return self.store if is_remote_store(self.store) else Path(self.store)

    @field_validator("api_key", "read_api_key")
    @classmethod
    def _blank_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _runtime_fits_device(self) -> "Settings":
        check_runtime(self.runtime, self.device, self.dtype)
        return self

    @property
    def galleries(self) -> dict[str, str | Path]:
        """Every gallery served: the `index` root (or --store) first (it also answers on the top-level routes), then
        the others."""
        first = self.store_location
        return {self.index_name: first, **self.collections} if first is not None else dict(self.collections)

    @property
    def max_upload_bytes(self) -> int:
        """The upload limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_total_upload_bytes(self) -> int:
        """The limit in bytes on all images of one request together (never below one image's limit)."""
        return max(int(self.max_total_upload_mb * 1024 * 1024), self.max_upload_bytes)

    @property
    def cors_origin_list(self) -> list[str]:
        """CORS origins as a list (empty: CORS disabled)."""
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
