"""Every word the shapes world writes: caption and modification-text templates, and the vocabulary.

Modification texts use only content words that captions also use ("big", "left", "stripes"),
so a text tower trained on captions alone can read them; only the command words ("make",
"turn", "move") are new to it, as instructions are new to a captioning-trained CLIP.
"""

from __future__ import annotations

import re

from cir.toyworld.spec import ATTRIBUTES

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
PATTERN_ADJECTIVES = {"striped": ("striped",), "solid": ("solid", "plain")}
PATTERN_SUFFIXES = {"striped": (" with stripes",), "solid": (" without stripes", " with no stripes")}
ANONYMOUS_NOUNS = ("shape", "object", "thing")
POSITION_PHRASES = (" in the {p}", " at the {p}", " in the {p} corner")
AXIS_PHRASES = {"left": (" on the left",), "right": (" on the right",),
                "top": (" at the top",), "bottom": (" at the bottom",)}

RELATIVE_CLAUSE = " that is "  # "a star that is big and red"
CAPTION_TEMPLATES = (
    "{np}",
    "{np}",
    "a picture of {np}",
    "an image of {np}",
    "there is {np}",
    "this shows {np}",
    "a photo with {np}",
)

MODIFICATIONS: dict[str, tuple[str, ...]] = {
    "colour": ("make it {new}", "change the colour to {new}", "{new} instead of {old}", "paint it {new}",
               "now {new}", "the same but {new}"),
    "shape": ("turn the {old} into a {new}", "make it a {new}", "a {new} instead of a {old}",
              "replace the {old} with a {new}", "change the {old} to a {new}"),
    "size:large": ("make it big", "make it large", "change the size to large", "the same but big"),
    "size:small": ("make it small", "make it tiny", "change the size to small", "the same but small"),
    "position": ("move it to the {new}", "put it in the {new}", "place it at the {new}",
                 "move it to the {new} corner"),
    "position:horizontal": ("move it {new}", "move it to the {new}", "shift it to the {new}"),
    "position:vertical": ("move it to the {new}", "shift it to the {new}", "put it at the {new}"),
    "pattern:striped": ("add stripes", "make it striped", "give it stripes", "the same but with stripes"),
    "pattern:solid": ("remove the stripes", "make it plain", "make it solid", "the same but without stripes"),
}
JOINS = ("{a} and {b}", "{a}, {b}", "{a}, and {b}", "{a} and also {b}")

_TOKEN = re.compile(r"[a-z]+|[^\sa-z]")


def words(text: str) -> list[str]:
    """Split text the way the toy tokenizer does: lower-case words and single punctuation marks."""
    return _TOKEN.findall(text.lower())


def vocabulary() -> list[str]:
    """Every word a caption, shared concept or modification text of this world can contain, sorted."""
    texts: list[str] = list(CAPTION_TEMPLATES) + list(JOINS) + list(ANONYMOUS_NOUNS) + ["a an", RELATIVE_CLAUSE]
    for values in ATTRIBUTES.values():
        texts.extend(values)
    for table in (SIZE_WORDS, PATTERN_ADJECTIVES, PATTERN_SUFFIXES, AXIS_PHRASES, MODIFICATIONS):
        for options in table.values():
            texts.extend(options)
    texts.extend(POSITION_PHRASES)
    vocab = set()
    for text in texts:
        vocab.update(w for w in words(text.replace("{", " ").replace("}", " "))
                     if w not in ("np", "p", "b", "new", "old"))
    vocab.update(["left", "right", "top", "bottom"])
    return sorted(vocab)
