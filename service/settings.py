"""Service configuration: every option is an environment variable with the `CIR_` prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cir.defaults import FUSIONS
from cir.runtimes import DEFAULT_RUNTIME, check_runtime


class Settings(BaseSettings):
    """Settings of `cir serve`; CLI flags override the `CIR_*` environment variables."""

    # An empty variable means "not set" (compose passes unset host variables as empty strings).
    model_config = SettingsConfigDict(env_prefix="CIR_", extra="ignore", protected_namespaces=(),
                                      env_ignore_empty=True)

    index: Path | None = Field(None, description="index root (holds CURRENT and versions/)")
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
    limit_concurrency: int | None = Field(None, ge=1, description="most connections/requests at once (then 503)")
    api_key: SecretStr | None = Field(None, description="key required by /admin/* (X-API-Key or Bearer)")
    cors_origins: str = Field("", description="comma-separated allowed CORS origins ('*' for any)")
    reload_interval_s: float = Field(2.0, ge=0, description="how often ROOT/CURRENT is checked; 0 disables")
    default_alpha: float | None = Field(None, ge=0, le=1, description="text weight when a request gives none")
    default_fusion: str = "slerp"
    thumb_cache: Path | None = Field(None, description="thumbnail cache folder (default: a temp folder)")
    thumb_cache_mb: float = Field(256.0, gt=0, description="most thumbnail bytes kept (MiB; least recently used go)")
    thumb_cache_files: int = Field(10_000, ge=1, description="most thumbnail files kept")
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

    @field_validator("api_key")
    @classmethod
    def _blank_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _runtime_fits_device(self) -> "Settings":
        check_runtime(self.runtime, self.device, self.dtype)
        return self

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
