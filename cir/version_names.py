"""Version names of an index root as users type them: a unique prefix (`v000003`) and, for one
that is gone, whether a build pruned it and which versions are kept.

`ROOT/PRUNED` lists the versions a build deleted (`--keep`), newest last, one per line (at most
MAX_PRUNED): it is what lets a rollback to a pruned version say so instead of "not found".
"""

from __future__ import annotations

from pathlib import Path

from cir.io import atomic_write_text

PRUNED_FILE = "PRUNED"
MAX_PRUNED = 1000


def read_pruned(root: Path) -> list[str]:
    """The versions builds pruned from `root` (oldest first); empty when none or unreadable."""
    try:
        return (Path(root) / PRUNED_FILE).read_text("utf-8").split()
    except (OSError, UnicodeDecodeError):
        return []


def record_pruned(root: Path, names: list[str]) -> None:
    """Add `names` to ROOT/PRUNED (atomically; the oldest entries go past MAX_PRUNED)."""
    if names:
        kept = [n for n in read_pruned(root) if n not in names] + list(names)
        atomic_write_text(Path(root) / PRUNED_FILE, "".join(n + "\n" for n in kept[-MAX_PRUNED:]))


def prefix_matches(name: str, versions: list[str]) -> list[str]:
    """The versions named exactly `name`, else those that start with it."""
    if name in versions:
        return [name]
    return [v for v in versions if name and v.startswith(name)]


def missing_message(name: str, versions: list[str], pruned: list[str], current: str | None) -> str:
    """Why `name` names no complete version: pruned (with the versions kept), ambiguous or unknown."""
    kept = ", ".join(f"{v} (CURRENT)" if v == current else v for v in versions) or "none"
    matches = prefix_matches(name, versions)
    if len(matches) > 1:
        return f"{name!r} matches {len(matches)} versions: give more of the name (versions: {kept})"
    gone = prefix_matches(name, pruned)
    if gone:
        return (f"version {gone[-1]} was pruned: a build keeps only the newest --keep versions (and CURRENT); "
                f"versions kept: {kept}")
    return f"no complete version {name!r} (versions: {kept})"
