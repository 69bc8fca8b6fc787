"""Hints for filter values no item has: `{"category": "Stickers"}` on a gallery of "stickers".

A string or tags value that is absent from its field's facets matches nothing, which is a
valid answer and not an error (as in Qdrant, Milvus and Weaviate), but mostly a typo or the
wrong case. Each such value gets one warning naming the closest values that exist: same
text in another case first, then the most similar by difflib's ratio. Only fields whose
facet values the manifest lists (at most cir.metadata.MAX_FACET_VALUES) are checked.
"""

from __future__ import annotations

import difflib
import json

from cir.errors import safe_text
from cir.metadata import STRING, TAGS

MAX_SUGGESTIONS = 3
MAX_WARNINGS = 10


def closest_values(value: str, known: list[str], n: int = MAX_SUGGESTIONS) -> list[str]:
    """The values of `known` nearest to `value`: case-insensitive equals first, then difflib's closest."""
    folded = value.casefold()
    same = [k for k in known if k.casefold() == folded]
    by_case = {k.casefold(): k for k in known}
    similar = [by_case[m] for m in difflib.get_close_matches(folded, list(by_case), n=n, cutoff=0.6)]
    return list(dict.fromkeys(same + similar))[:n]


def _shown(value: str) -> str:
    return safe_text(json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False))


# The operators under which a value no item has makes its condition match nothing; under `ne`,
# `nin` or a `not` such a value excludes nothing, and a warning would mislead.
MATCHING_OPS = ("eq", "in", "any", "all")


def _matching_conditions(node) -> list:
    if hasattr(node, "parts"):  # and / or / not over sub-filters (cir.filters.Boolean)
        return [] if node.op == "not" else [c for part in node.parts for c in _matching_conditions(part)]
    return [node] if node.op in MATCHING_OPS else []


def filter_hints(flt, fields: dict[str, dict] | None) -> list[str]:
    """One warning per string/tags filter value absent from its field's facets, with the closest values."""
    if flt is None or not fields:
        return []
    warnings: list[str] = []
    seen: set[tuple[str, str]] = set()
    for cond in _matching_conditions(flt.root):
        info = fields.get(cond.field) or {}
        known = info.get("values")
        if info.get("type") not in (STRING, TAGS) or not isinstance(known, dict):
            continue
        values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
        for value in values:
            if not isinstance(value, str) or value in known or (cond.field, value) in seen:
                continue
            seen.add((cond.field, value))
            close = closest_values(value, list(known))
            hint = f"; closest: {', '.join(_shown(c) for c in close)}" if close else ""
            warnings.append(f"filter: field {_shown(cond.field)} has no value {_shown(value)} (no item matches "
                            f"it){hint}")
    return warnings[:MAX_WARNINGS]
