"""The shapes world: a procedurally rendered toy domain for training and testing composed retrieval.

Python API (what training and tests import):

- `generate_world(out, seed, gallery_size, n_queries, n_captions, image_size, style)` writes a world;
  `holds_world(out, ...)` says whether `out` already holds the world those arguments write.
- `render(attrs, rng, image_size) -> PIL.Image` draws one object.
- `caption(attrs, rng) -> Caption(text, mentions)` writes a full or partial caption.
- `describes(mentions, attrs)` is the multi-positive label: does a caption fit a render?
- `all_combinations()`, `seen_combinations()`, `heldout_combinations()`, `is_heldout(attrs)`.
- `vocabulary()` lists every word the world can write (for word-level tokenizers).
"""

from cir.toyworld.captions import Caption, caption, describes, full_caption, noun_phrase
from cir.toyworld.phrases import vocabulary, words
from cir.toyworld.queries import QuerySpec, make_queries, modification_text
from cir.toyworld.render import render, render_array
from cir.toyworld.spec import (ATTRIBUTES, HELDOUT_PAIRS, Attrs, all_combinations, heldout_combinations,
                               is_heldout, seen_combinations, to_attrs)
from cir.toyworld.world import generate_world, holds_world

__all__ = [
    "ATTRIBUTES", "HELDOUT_PAIRS", "Attrs", "Caption", "QuerySpec", "all_combinations", "caption",
    "describes", "full_caption", "generate_world", "heldout_combinations", "holds_world", "is_heldout", "make_queries",
    "modification_text", "noun_phrase", "render", "render_array", "seen_combinations", "to_attrs",
    "vocabulary", "words",
]
