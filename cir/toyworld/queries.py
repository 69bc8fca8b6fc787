"""Composed-retrieval queries: a reference combination, a modification text, a target combination."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from cir.toyworld import phrases
from cir.toyworld.spec import ATTRIBUTES, Attrs, differing, is_heldout

HELDOUT_TARGET_SHARE = 0.3
TWO_CHANGE_PROB = 0.4


class QuerySpec(NamedTuple):
    """One composed query in attribute space (before it is tied to gallery renders)."""

    reference: Attrs
    target: Attrs
    changed: tuple[str, ...]
    text: str


def _pick(options, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def _position_change(old: str, new: str, rng: np.random.Generator) -> str:
    (ov, oh), (nv, nh) = old.split(), new.split()
    if ov == nv:
        return _pick(phrases.MODIFICATIONS["position:horizontal"], rng).format(new=nh)
    if oh == nh:
        return _pick(phrases.MODIFICATIONS["position:vertical"], rng).format(new=nv)
    return _pick(phrases.MODIFICATIONS["position"], rng).format(new=new)


def change_phrase(name: str, old: str, new: str, rng: np.random.Generator) -> str:
    """A phrase asking to change one attribute from `old` to `new` ("make it blue")."""
    if name == "position":
        return _position_change(old, new, rng)
    if name in ("size", "pattern"):
        return _pick(phrases.MODIFICATIONS[f"{name}:{new}"], rng)
    return _pick(phrases.MODIFICATIONS[name], rng).format(old=old, new=new)


def modification_text(reference: Attrs, target: Attrs, rng: np.random.Generator) -> str:
    """The modification text that turns `reference` into `target` (one or two changes)."""
    names = differing(reference, target)
    if not 1 <= len(names) <= 2:
        raise ValueError(f"a modification changes one or two attributes, not {len(names)}")
    parts = [change_phrase(n, getattr(reference, n), getattr(target, n), rng) for n in names]
    if len(parts) == 1:
        return parts[0]
    if rng.random() < 0.5:
        parts.reverse()
    return _pick(phrases.JOINS, rng).format(a=parts[0], b=parts[1])


def _reference_for(target: Attrs, available: set[Attrs], rng: np.random.Generator) -> Attrs | None:
    """A reference differing from the target in one or two attributes, or None if unavailable."""
    k = 2 if rng.random() < TWO_CHANGE_PROB else 1
    names = [list(ATTRIBUTES)[i] for i in sorted(rng.choice(len(ATTRIBUTES), size=k, replace=False))]
    changes = {}
    for name in names:
        others = [v for v in ATTRIBUTES[name] if v != getattr(target, name)]
        changes[name] = _pick(others, rng)
    reference = target.replace(**changes)
    return reference if reference in available else None


def make_queries(available: Sequence[Attrs], n: int, rng: np.random.Generator,
                 heldout_share: float = HELDOUT_TARGET_SHARE) -> list[QuerySpec]:
    """Sample n distinct queries whose reference and target combinations are both in `available`.

    About `heldout_share` of the targets are held-out combinations (when any are available), so
    that the held-out score rests on enough queries.
    """
    pool = sorted(set(available))
    heldout = [a for a in pool if is_heldout(a)]
    seen = [a for a in pool if not is_heldout(a)]
    if len(pool) < 2:
        raise ValueError("need at least two combinations to build queries")
    lookup, made, used = set(pool), [], set()
    attempts = 0
    while len(made) < n:
        attempts += 1
        if attempts > 200 * max(n, 1):
            raise ValueError(f"could only build {len(made)} distinct queries of {n} from {len(pool)} combinations")
        group = heldout if heldout and (rng.random() < heldout_share or not seen) else seen
        target = _pick(group, rng)
        reference = _reference_for(target, lookup, rng)
        if reference is None or (reference, target) in used:
            continue
        used.add((reference, target))
        made.append(QuerySpec(reference, target, tuple(differing(reference, target)),
                              modification_text(reference, target, rng)))
    return made
