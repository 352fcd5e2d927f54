"""Captions of the synthetic birds and their word list (docs/design.md §4 "The embedded default").

A caption names the bird's main colour and two or three parts with their colour and pattern,
e.g. 'a photo of a red bird with striped brown wings and a grey beak'; ``CAPTION_WORDS`` is
every word a caption can use (the toy tokenizer learns them as whole tokens).
"""

from __future__ import annotations

from diffparts.corpus.synth_species import COLOURS

_PATTERN_WORDS = {"stripes": "striped", "spots": "spotted", "gradient": "shaded", "cap": "capped"}
_PLURAL_WORDS = {"wing": "wings", "leg": "legs", "legs": "legs", "eye": "eyes"}

CAPTION_WORDS: tuple[str, ...] = tuple(sorted(
    {"a", "photo", "of", "bird", "with", "and"}
    | set(COLOURS)
    | set(_PATTERN_WORDS.values())
    | {"head", "beak", "eyes", "breast", "belly", "back", "wings", "tail", "legs"}
))


def _caption(rng, names, patt):
    """e.g. 'a photo of a red bird with striped brown wings and a grey beak'."""
    main = names["back"]
    options = ["wing", "beak", "head", "tail", "breast", "legs", "belly"]
    chosen = [options[i] for i in sorted(rng.choice(len(options), 2 + rng.integers(2), replace=False))]
    phrases = []
    for part in chosen:
        kind = patt.get(part, (None,))[0]
        words = ([_PATTERN_WORDS[kind]] if kind else []) + [names[part]]
        noun = _PLURAL_WORDS.get(part, part)
        phrase = " ".join(words + [noun])
        phrases.append(phrase if noun.endswith("s") else "a " + phrase)
    return f"a photo of a {main} bird with " + " and ".join(phrases)


# ----------------------------------------------------------------------------------------------
# The part world's captions (``corpus.synth_world``): every visible part named with its colour,
# pattern and shape, close-ups of one part, and scenes without a bird. Part nouns are the part
# mask legend's names (``PART_NAMES``), singular, so one word means one mask value everywhere.

_SHAPE_WORDS = {"short": "short", "long": "long", "hooked": "hooked", "fan": "fanned",
                "fork": "forked", "crest": "crested", "none": None}
_SCENE_WORDS = {0: "a blurry background", 1: "reeds", 2: "leaves", 3: "the sky"}

PART_WORLD_WORDS: tuple[str, ...] = tuple(sorted(
    set(CAPTION_WORDS)
    | {"an", "eye", "wing", "close", "up", "the", "sky", "reeds", "leaves", "blurry", "background",
       "branch"}
    | {w for w in _SHAPE_WORDS.values() if w}
))


def _article(phrase):
    return "an" if phrase[0] in "aeiou" else "a"


def _part_phrase(part, names, patt, shape, article=True):
    """e.g. 'a short yellow beak', 'striped brown wing' ... with the shape word first."""
    words = []
    if part == "beak":
        words.append(_SHAPE_WORDS[shape["beak"]])
    elif part == "tail":
        words.append(_SHAPE_WORDS[shape["tail"]])
    elif part == "head" and shape["crest"] == "crest":
        words.append(_SHAPE_WORDS["crest"])
    kind = patt.get(part, (None,))[0]
    if kind:
        words.append(_PATTERN_WORDS[kind])
    return words + [names[part]]


def _whole_caption(rng, names, patt, shape, visible):
    """'a photo of a blue bird with a red head, a short yellow beak and a striped blue wing':
    every part in ``visible`` (mask legend names), in a random order."""
    order = [visible[i] for i in rng.permutation(len(visible))]
    phrases = []
    for part in order:
        phrase = " ".join(_part_phrase(part, names, patt, shape) + [part])
        phrases.append(phrase if part == "legs" else _article(phrase) + " " + phrase)
    if not phrases:
        return f"a photo of {_article(names['back'])} {names['back']} bird"
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"a photo of {_article(names['back'])} {names['back']} bird with {body}"


def _closeup_caption(part, names, patt, shape, plain=False):
    """'a close-up of a red bird head', 'a close-up of pink bird legs'; ``plain``: the part alone,
    'a close-up of a bird head', 'a close-up of bird legs'."""
    words = " ".join(([] if plain else _part_phrase(part, names, patt, shape)) + ["bird", part])
    return f"a close-up of {words}" if part == "legs" else f"a close-up of {_article(words)} {words}"


def _scene_caption(background):
    """'a photo of leaves and a branch' from the background's (kind, branch)."""
    kind, branch = background
    return f"a photo of {_SCENE_WORDS[kind]}" + (" and a branch" if branch else "")
