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
