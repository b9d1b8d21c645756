"""Normalised exact match for short answers and yes/no questions.

Normalisation (as in SQuAD-style exact match): lower case, punctuation removed, the articles a/an/the removed,
whitespace collapsed. A yes/no answer is read from the prediction's first word ("Yes, there is." is yes).
"""

from __future__ import annotations

import re
import unicodedata

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(char).startswith("P") else char for char in text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def yes_no(text: str) -> str | None:
    """`yes` or `no` when the text starts with it, else None."""
    words = normalise(text).split()
    return words[0] if words and words[0] in ("yes", "no") else None


def exact_match(prediction: str, reference: str, kind: str) -> bool:
    """Whether `prediction` answers `reference`: the same yes/no for a yes/no question, the same normalised text
    otherwise."""
    if kind == "yes_no":
        expected = yes_no(reference)
        return expected is not None and yes_no(prediction) == expected
    return normalise(prediction) == normalise(reference)
