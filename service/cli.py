"""`cir serve` / `python -m service`: run the composed image retrieval HTTP service with uvicorn."""

from __future__ import annotations

import argparse
import logging
import re
import sys

from pydantic import ValidationError

# Light imports only: the parser is built, and --help answered, before torch and FastAPI load.
from cir.defaults import DEFAULT_ALPHA, is_remote_store
from service.settings import NAME_PATTERN, Settings

DESCRIPTION = """\
Serve composed image retrieval over HTTP: POST /search (multipart: image(s) and/or reference_id(s),
text, k, alpha, fusion, min_score, image_weights, negative_text, negative_weight), GET /images/{id},
/healthz, /readyz, /info, /metrics, a web page at / and the OpenAPI docs at /docs. The encoder and
the index published in ROOT/CURRENT load at start-up; a newly published version is swapped in
without a restart.

Every option can also be set by an environment variable (shown in brackets); flags win.
The API keys are read from CIR_API_KEY (admin routes) and CIR_READ_API_KEY (search, images, facets,
info, metrics) only, so they never show in `ps`; each may list several comma-separated keys."""

# (flag, settings field, type, help)
OPTIONS = [
    ("--index", "index", list, "index root holding CURRENT and versions/ (this or --store is required); NAME=ROOT "
                               "names a gallery, repeat it to serve several (/collections/NAME/...; the first also "
                               "answers on /search)"),
    ("--store", "store", str, "the gallery store instead of --index: milvus://HOST:PORT/NAME (milvuss:// for TLS; "
                              "token from CIR_MILVUS_TOKEN, never a flag) or an index root"),
    ("--image-url-template", "image_url_template", str,
     "results' image_url from this template, e.g. https://cdn.example/{id} (default: this server's /images/{id})"),
    ("--wait-for-index", "wait_for_index", bool,
     "start even if the index root has no published version (or does not exist) yet, unready until one is"),
    ("--host", "host", str, "interface to bind (default 127.0.0.1)"),
    ("--port", "port", int, "port (default 8000)"),
    ("--model", "model", str, "model override (default: the model named in the index manifest)"),
    ("--adapter", "adapter", str, "LoRA adapter override (default: the manifest's adapter)"),
    ("--device", "device", str, "torch device: auto, cpu, cuda, cuda:N (default auto)"),
    ("--dtype", "dtype", str, "autocast dtype: auto (bf16 on GPU), float32, bfloat16, float16"),
    ("--runtime", "runtime", str, "encoder runtime: torch (default) or onnx (ONNX Runtime on the CPU, exported once)"),
    ("--onnx-cache", "onnx_cache", str, "folder of cached ONNX exports (default ~/.cache/cir/onnx)"),
    ("--max-upload-mb", "max_upload_mb", float, "largest image upload in MiB (default 10)"),
    ("--max-total-upload-mb", "max_total_upload_mb", float, "largest total of a request's images in MiB (default 32)"),
    ("--max-pixels", "max_pixels", int, "decompression-bomb guard: most pixels per image (default 40000000)"),
    ("--max-text-chars", "max_text_chars", int, "longest modification text in characters (default 2000)"),
    ("--max-batch", "max_batch", int, "largest micro-batch per forward pass or search (default 32)"),
    ("--batch-wait-ms", "batch_wait_ms", float, "longest wait to fill a micro-batch (default 2)"),
    ("--max-queue", "max_queue", int, "queued encodes before answering 503 overloaded (default 1024)"),
    ("--decode-workers", "decode_workers", int, "threads decoding uploads (default 4)"),
    ("--decode-memory-mb", "decode_memory_mb", float,
     "most MiB the images being decoded at once may take; a large one waits for room (default 256)"),
    ("--torch-threads", "torch_threads", int, "torch (and ONNX Runtime) CPU threads (default: torch's choice)"),
    ("--max-header-kb", "max_header_kb", int, "most KiB of request line and headers, else 431 (default 64)"),
    ("--header-timeout-s", "header_timeout_s", float, "seconds a client has to send the headers, else 408 (default 10)"),
    ("--body-timeout-s", "body_timeout_s", float,
     "longest wait for the next piece of a request body, else 408 (default 30)"),
    ("--keep-alive-s", "keep_alive_s", float, "seconds an idle keep-alive connection stays open (default 5)"),
    ("--request-timeout-s", "request_timeout_s", float,
     "deadline of a request from its first byte to the start of its answer: 408 while the body is still "
     "arriving, else 503 (default 60)"),
    ("--limit-concurrency", "limit_concurrency", int,
     "most connections and requests at once before answering 503 (default 1000)"),
    ("--cors-origins", "cors_origins", str, "comma-separated CORS origins, '*' for any (default: none)"),
    ("--reload-interval-s", "reload_interval_s", float, "seconds between checks of ROOT/CURRENT; 0 = off (default 2)"),
    ("--default-alpha", "default_alpha", float,
     f"text weight when a request gives none (default: manifest, else {DEFAULT_ALPHA})"),
    ("--default-fusion", "default_fusion", str, "fusion when a request gives none (default slerp)"),
    ("--thumb-cache", "thumb_cache", str, "thumbnail cache folder (default: a temporary folder)"),
    ("--thumb-cache-mb", "thumb_cache_mb", float, "most MiB of thumbnails kept, least recently used go (default 256)"),
    ("--thumb-cache-files", "thumb_cache_files", int, "most thumbnail files kept (default 10000)"),
    ("--display-fields", "display_fields", str,
     "comma-separated metadata fields the page shows under each hit, e.g. title,price (default: title, name and "
     "price when present, else the index's first 3 fields)"),
    ("--status-file", "status_file", str,
     "a JSON file {\"message\": ...} that a background job (the demo's TAT run) keeps up to date: shown by /info "
     "and the page"),
    ("--feedback-dir", "feedback_dir", str,
     "log searches and POST /feedback clicks here for `cir feedback export` (default: feedback off)"),
    ("--feedback-keep-uploads", "feedback_keep_uploads", bool,
     "keep uploaded query images in the feedback log (default: only their SHA-256)"),
    ("--log-level", "log_level", str, "debug, info, warning or error (default info)"),
    ("--writes", "writes", str, "live writes (PUT/PATCH/DELETE /items): auto (unless another server of the root "
                                "takes them: then read-only), on (else refuse to start) or off (default auto)"),
    ("--compact-pending", "compact_pending", int, "compact when this many live changes are pending; 0 = never "
                                                  "(default 10000)"),
    ("--compact-age-s", "compact_age_s", float, "compact when the oldest pending change is this old; 0 = never "
                                                "(default 3600)"),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `cir serve`."""
    p = argparse.ArgumentParser(prog="cir serve", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, field, kind, text in OPTIONS:
        how = {"action": "store_true"} if kind is bool else {"action": "append"} if kind is list else {"type": kind}
        p.add_argument(flag, dest=field, default=None, help=f"{text} [CIR_{field.upper()}]", **how)
    return p


def _galleries(values: list[str]) -> dict:
    """--index values -> Settings fields: the first root (and its name), the other named galleries."""
    named = [v.partition("=") if re.fullmatch(NAME_PATTERN, v.partition("=")[0]) and "=" in v else ("", "", v)
             for v in values]
    if len(named) > 1 and any(not name for name, _, _ in named):
        raise ValueError("give every --index as NAME=ROOT when serving several galleries")
    names = [name for name, _, _ in named]
    if len(set(names)) < len(names):
        raise ValueError(f"--index: gallery names must differ: {', '.join(names)}")
    first = named[0]
    out = {"index": first[2], **({"index_name": first[0]} if first[0] else {})}
    if len(named) > 1:
        out["collections"] = {name: root for name, _, root in named[1:]}
    return out


def load_settings(argv: list[str] | None = None) -> Settings:
    """Settings from the environment, overridden by the flags given."""
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    if "index" in overrides:
        overrides.update(_galleries(overrides.pop("index")))
    return Settings(**overrides)


def main(argv: list[str] | None = None) -> int:
    """Run `cir serve`; returns the exit status."""
    try:
        settings = load_settings(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), as a return code for callers
        return int(exc.code or 0)
    except ValidationError as exc:
        # a cross-field check (runtime vs device) has no field location
        errors = "; ".join((f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + e["msg"] for e in exc.errors())
        print(f"cir serve: error: {errors}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"cir serve: error: {exc}", file=sys.stderr)
        return 2
    if settings.store_location is None:
        print("cir serve: error: no index root: pass --index ROOT (or --store milvus://HOST:PORT/NAME) or set "
              "CIR_INDEX", file=sys.stderr)
        return 2
    # Heavy (faiss, torch): the index check imports the service's loader, after parsing.
    from service.swap import unpublished_reason  # noqa: PLC0415

    for name, root in settings.galleries.items():
        # A server store (Milvus) is asked at start-up, where an outage means "not ready, retrying".
        if not settings.wait_for_index and not is_remote_store(root) and (reason := unpublished_reason(root)):
            where = f"gallery {name!r}: " if len(settings.galleries) > 1 else ""
            print(f"cir serve: error: {where}{reason}", file=sys.stderr)
            return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _serve(settings)


class _StartupFailure(logging.Filter):
    """Holds back what a failing start logs (uvicorn's traceback, the loader's error) until we know it.

    A known failure (the index or model could not be loaded) then reads as one line; anything
    else is logged as it came.
    """

    def __init__(self, server):
        super().__init__()
        self.server, self.held = server, []

    def filter(self, record: logging.LogRecord) -> bool:
        if self.server.started:
            return True
        message = record.getMessage()
        failing = (record.name == "uvicorn.error" and (message.startswith("Traceback")
                                                        or message == "Application startup failed. Exiting.")) \
            or (record.name.startswith("service.") and record.levelno >= logging.ERROR)
        if failing:
            self.held.append(record)
        return not failing


def _serve(settings: Settings) -> int:
    # Heavy (torch, transformers, faiss, FastAPI): imported only once the settings are known to be good.
    import uvicorn  # noqa: PLC0415

    from service.app import create_app  # noqa: PLC0415
    from service.server import uvicorn_config  # noqa: PLC0415

    app = create_app(settings)
    server = uvicorn.Server(uvicorn_config(app, settings))
    startup = _StartupFailure(server)
    watched = [logging.getLogger("uvicorn.error"), *logging.getLogger().handlers]
    for target in watched:
        target.addFilter(startup)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it stopped on
        print("cir serve: stopped (Ctrl-C)", file=sys.stderr)
        return 130
    except SystemExit:  # uvicorn's way out of a failed lifespan: explained below
        pass
    finally:
        for target in watched:
            target.removeFilter(startup)
    if server.started:
        return 0
    error = getattr(getattr(app.state, "manager", None), "last_error", None)
    if error is None:  # not a failure we know: show what was logged
        for record in startup.held:
            logging.getLogger(record.name).handle(record)
        return 1
    print(f"cir serve: error: cannot start: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
