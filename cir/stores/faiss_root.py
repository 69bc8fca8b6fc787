"""The default store: a versioned FAISS index root on a local or shared file system (cir.index_store)."""

from __future__ import annotations

from pathlib import Path

from cir.index_store import IndexRoot, IndexStoreError, LoadedIndex, load_version
from cir.stores.base import GalleryStore


class FaissRootStore(GalleryStore):
    """ROOT/versions/<v>/ and ROOT/CURRENT: views are loaded versions, publish is an atomic rename."""

    def __init__(self, root: str | Path, *, gpu: bool = False, mmap: bool = True):
        self.root = Path(root)
        self.index_root = IndexRoot(self.root)
        self.gpu, self.mmap = gpu, mmap
        self.name = f"index root {self.root.name or self.root}"

    def current_version(self) -> str | None:
        """The version named in ROOT/CURRENT, or None."""
        return self.index_root.current_version()

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        return self.index_root.versions()

    def unpublished_reason(self) -> str | None:
        """Why the root has nothing to serve (no folder, no published version), or None."""
        root = self.root
        if not root.is_dir():
            return f"index root {root} is not a directory"
        try:
            if self.current_version() is not None:
                return None
        except IndexStoreError:
            return None  # a version is published but unreadable: opening it reports why
        what = "versions but no CURRENT" if self.versions() else "no CURRENT and no versions/"
        return (f"{root} is not a published index root ({what}): build one with `cir index build --out {root}`, "
                "or pass --wait-for-index (CIR_WAIT_FOR_INDEX=1) to start unready and serve the first version "
                "published")

    def open(self, version: str | None = None) -> LoadedIndex:
        """Load a version (default: CURRENT) for searching."""
        return load_version(self.root, version, mmap=self.mmap, gpu=self.gpu)

    def publish(self, version: str) -> None:
        """Point CURRENT at a complete version."""
        self.index_root.publish(version)
