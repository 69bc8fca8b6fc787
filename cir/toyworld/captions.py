"""Natural captions in varied wording, full or partial, and which renders a caption truly describes.

A caption comes with its `mentions`: the attributes it states. Position may be stated in full
("top left") or along one axis ("left"). `describes(mentions, attrs)` is the multi-positive
label used by contrastive training: a partial caption fits every render it does not contradict.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np

from cir.toyworld import phrases
from cir.toyworld.spec import ATTRIBUTES, Attrs, to_attrs

FULL_CAPTION_PROB = 0.7
AXES = ("top", "bottom", "left", "right")


class Caption(NamedTuple):
    """A caption's text and the attributes it states (attribute name -> value)."""

    text: str
    mentions: dict[str, str]


def _pick(options, rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _position_phrase(value: str, rng: np.random.Generator) -> str:
    if value in AXES:
        return _pick(phrases.AXIS_PHRASES[value], rng)
    return _pick(phrases.POSITION_PHRASES, rng).format(p=value)


def noun_phrase(mentions: Mapping[str, str], rng: np.random.Generator) -> str:
    """A noun phrase ("a big red striped star in the top left") stating exactly `mentions`."""
    adjectives, suffix = [], ""
    if "size" in mentions:
        adjectives.append(_pick(phrases.SIZE_WORDS[mentions["size"]], rng))
    if "colour" in mentions:
        adjectives.append(mentions["colour"])
    if "pattern" in mentions:
        if rng.random() < 0.5:
            adjectives.append(_pick(phrases.PATTERN_ADJECTIVES[mentions["pattern"]], rng))
        else:
            suffix = _pick(phrases.PATTERN_SUFFIXES[mentions["pattern"]], rng)
    noun = mentions.get("shape") or _pick(phrases.ANONYMOUS_NOUNS, rng)
    position = _position_phrase(mentions["position"], rng) if "position" in mentions else ""
    if len(adjectives) >= 2 and rng.random() < 0.25:
        listed = ", ".join(adjectives[:-1]) + " and " + adjectives[-1]
        return f"{_article(noun)} {noun}{suffix}{position}{phrases.RELATIVE_CLAUSE}{listed}"
    head = " ".join(adjectives + [noun])
    return f"{_article(head)} {head}{suffix}{position}"


def sample_mentions(attrs: Mapping[str, str] | Attrs, rng: np.random.Generator,
                    full_prob: float = FULL_CAPTION_PROB) -> dict[str, str]:
    """Choose what a caption states: all attributes with probability full_prob, else 1 to 4."""
    a = to_attrs(attrs).as_dict()
    names = list(ATTRIBUTES)
    if rng.random() >= full_prob:
        k = int(rng.integers(1, len(names)))
        names = [names[i] for i in sorted(rng.choice(len(names), size=k, replace=False))]
    mentions = {name: a[name] for name in names}
    if "position" in mentions and len(names) < len(ATTRIBUTES) and rng.random() < 0.5:
        mentions["position"] = mentions["position"].split()[int(rng.integers(2))]
    return mentions


def caption(attrs: Mapping[str, str] | Attrs, rng: np.random.Generator,
            full_prob: float = FULL_CAPTION_PROB) -> Caption:
    """A random natural caption of a render with these attributes, full or partial."""
    mentions = sample_mentions(attrs, rng, full_prob)
    text = _pick(phrases.CAPTION_TEMPLATES, rng).format(np=noun_phrase(mentions, rng))
    return Caption(text=text, mentions=mentions)


def full_caption(attrs: Mapping[str, str] | Attrs, rng: np.random.Generator) -> str:
    """A caption that states every attribute (for text-to-image retrieval checks)."""
    return caption(attrs, rng, full_prob=1.0).text


def describes(mentions: Mapping[str, str], attrs: Mapping[str, str] | Attrs) -> bool:
    """True when a caption stating `mentions` is a correct description of a render with `attrs`."""
    a = to_attrs(attrs)
    for name, value in mentions.items():
        actual = getattr(a, name)
        if name == "position":
            if not set(value.split()) <= set(actual.split()):
                return False
        elif value != actual:
            return False
    return True
