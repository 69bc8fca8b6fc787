"""The search-feedback log: what `cir serve --feedback-dir DIR` stores and `cir feedback export` reads.

DIR holds append-only JSONL segments `feedback-<UTC time>-<ns>.jsonl` with two kinds of lines:

    {"event": "query", "query_id", "time", "gallery", "index_version", "references": [gallery ids],
     "uploads": [SHA-256 of each uploaded image], "text", "alpha", "fusion", "filter", "k", "results": [ids]}
    {"event": "feedback", "query_id", "item_id", "kind": "click" | "select" | "skip", "time"}

Uploaded image bytes are kept (as DIR/uploads/<sha256>) only when keep_uploads is on; otherwise
only their hash is. A segment is closed when it passes `segment_mb`; whole segments (and kept
uploads) are deleted, oldest first, once they are older than `max_age_days` or the folder passes
`max_mb`. Each line is one `write` to a file opened for appending, so a crash (kill -9) loses no
acknowledged event and leaves at most a torn last line, which readers skip.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from hashlib import sha256
from pathlib import Path
from typing import Iterator

from cir.io import atomic_write_text

log = logging.getLogger(__name__)

KINDS = ("click", "select", "skip")
POSITIVE_KINDS = ("click", "select")  # what `export` turns into triplets; a skip is a shown, passed-over item
PREFIX, SUFFIX = "feedback-", ".jsonl"
UPLOADS = "uploads"
RECENT_QUERIES = 100_000  # query ids the service remembers to validate feedback


def new_query_id() -> str:
    """A fresh random query id (32 hex digits)."""
    return uuid.uuid4().hex


def segments(root: str | Path) -> list[Path]:
    """The log's segments, oldest first."""
    root = Path(root)
    return sorted(root.glob(f"{PREFIX}*{SUFFIX}")) if root.is_dir() else []


def read_events(root: str | Path) -> Iterator[dict]:
    """Every event of the log in write order; torn or foreign lines are skipped."""
    for path in segments(root):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict) and event.get("event") in ("query", "feedback"):
                    yield event


class FeedbackLog:
    """Appends query and feedback events to DIR, within its size and age limits (thread-safe)."""

    def __init__(self, root: str | Path, keep_uploads: bool = False, max_mb: float = 1024.0,
                 max_age_days: float = 90.0, segment_mb: float = 64.0):
        if max_mb <= 0 or max_age_days <= 0 or segment_mb <= 0:
            raise ValueError("feedback limits (max_mb, max_age_days, segment_mb) must be > 0")
        self.root, self.keep_uploads = Path(root).expanduser(), keep_uploads
        self.max_bytes, self.max_age_s = int(max_mb * 2**20), max_age_days * 86400.0
        self.segment_bytes = min(int(segment_mb * 2**20), self.max_bytes)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / UPLOADS).mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self.recent: OrderedDict[str, str | None] = OrderedDict()  # query_id -> gallery name
        for event in read_events(self.root):  # feedback on queries logged before a restart stays valid
            if event["event"] == "query":
                self._remember(str(event.get("query_id")), event.get("gallery"))
        self.prune()

    def _remember(self, query_id: str, gallery: str | None) -> None:
        self.recent[query_id] = gallery
        while len(self.recent) > RECENT_QUERIES:
            self.recent.popitem(last=False)

    def knows(self, query_id: str) -> bool:
        """Was this query logged (and not yet forgotten)?"""
        return query_id in self.recent

    def gallery_of(self, query_id: str) -> str | None:
        """The gallery (collection) a logged query searched, None for the default or an unknown query."""
        return self.recent.get(query_id)

    def _open_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        # UTC time then nanoseconds: names sort in write order and never repeat
        self._path = self.root / f"{PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{time.time_ns()}{SUFFIX}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def _append(self, event: dict, sync: bool) -> None:
        line = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None or os.fstat(self._fd).st_size + len(line) > self.segment_bytes:
                self._open_segment()
                self.prune()
            os.write(self._fd, line)
            if sync:
                os.fsync(self._fd)

    def _keep(self, data: bytes) -> str:
        digest = sha256(data).hexdigest()
        path = self.root / UPLOADS / digest
        if self.keep_uploads and not path.is_file():
            tmp = path.with_name(f".{digest}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return digest

    def record_query(self, query_id: str, *, references, uploads, text, alpha, fusion, filter, k: int,
                     index_version: str | None, results, gallery: str | None = None) -> None:
        """Log one search (uploads as their SHA-256, their bytes too when keep_uploads is on)."""
        event = {"event": "query", "query_id": query_id, "time": time.time(), "gallery": gallery,
                 "index_version": index_version,
                 "references": list(references), "uploads": [self._keep(u) for u in uploads], "text": text,
                 "alpha": alpha, "fusion": fusion, "filter": filter, "k": k, "results": list(results)}
        self._append(event, sync=False)
        with self._lock:
            self._remember(query_id, gallery)

    def record_feedback(self, query_id: str, item_id: str, kind: str) -> dict:
        """Log one click, select or skip on a logged query's item; returns the event."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        event = {"event": "feedback", "query_id": query_id, "item_id": item_id, "kind": kind, "time": time.time()}
        self._append(event, sync=True)
        return event

    def _files(self) -> list[Path]:
        """Segments and kept uploads, oldest first (the open segment last)."""
        uploads = [p for p in (self.root / UPLOADS).iterdir() if p.is_file()]
        closed = [p for p in segments(self.root) if p != self._path]
        files = sorted(closed + uploads, key=lambda p: p.stat().st_mtime)
        return files + ([self._path] if self._path is not None and self._path.exists() else [])

    def prune(self) -> list[Path]:
        """Delete segments and uploads past the age limit, then the oldest until the folder fits max_mb."""
        removed, now = [], time.time()
        files = self._files()
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if path == self._path:
                break
            size, old = path.stat().st_size, now - path.stat().st_mtime > self.max_age_s
            if not old and total <= self.max_bytes:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path)
        if removed:
            log.info("feedback log: removed %d files past the size or age limit", len(removed))
        return removed

    def close(self) -> None:
        """Close the open segment."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def export_triplets(root: str | Path, out: str | Path, kinds=POSITIVE_KINDS) -> dict:
    """Write the log's feedback as `cir train --triplets` JSONL rows; returns counts of what was written and skipped.

    A row per (query, item) with a positive kind: {"reference": gallery id(s) and/or kept upload
    file(s), "text", "target": the item id, ...}. Queries without a text, or whose upload was not
    kept, give no row (there is no modification, or no reference image to train on).
    """
    root = Path(root).expanduser()
    queries, rows, seen = {}, [], set()
    counts = {"queries": 0, "feedback": 0, "written": 0, "no_text": 0, "upload_not_kept": 0, "unknown_query": 0,
              "no_reference": 0, "target_is_reference": 0, "duplicate": 0, "other_kind": 0}
    for event in read_events(root):
        if event["event"] == "query":
            queries[event.get("query_id")] = event
            counts["queries"] += 1
            continue
        counts["feedback"] += 1
        query = queries.get(event.get("query_id"))
        reason = _skip_reason(event, query, root, kinds)
        if reason:
            counts[reason] += 1
            continue
        refs = list(query["references"]) + [str(root / UPLOADS / h) for h in query["uploads"]]
        key = (tuple(refs), query["text"], event["item_id"])
        if key in seen:
            counts["duplicate"] += 1
            continue
        seen.add(key)
        rows.append({"reference": refs[0] if len(refs) == 1 else refs, "text": query["text"],
                     "target": event["item_id"], "kind": event["kind"], "query_id": event["query_id"],
                     "index_version": query.get("index_version"), "alpha": query.get("alpha")})
    atomic_write_text(Path(out).expanduser(), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    counts["written"] = len(rows)
    return counts


def _skip_reason(event: dict, query: dict | None, root: Path, kinds) -> str | None:
    if event.get("kind") not in kinds:
        return "other_kind"
    if query is None:
        return "unknown_query"
    if not (query.get("text") or "").strip():
        return "no_text"
    if any(not (root / UPLOADS / h).is_file() for h in query.get("uploads", ())):
        return "upload_not_kept"
    if not query.get("references") and not query.get("uploads"):
        return "no_reference"  # a text-only query has no reference image to train on
    if event.get("item_id") in query.get("references", ()):
        return "target_is_reference"
    return None
