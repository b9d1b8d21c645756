"""Multiple-choice prompts and reading the letter out of a generated answer.

The generated-letter prompt lists the options under the question and asks for the letter, as LLaVA-style
video models are evaluated ("Answer with the option's letter from the given choices directly."). The
likelihood scoring (`likelihood.py`) asks the question alone and scores each option's text as the answer, so
an option's score does not depend on its position: a model biased toward "A" cannot collapse onto it.
"""

from __future__ import annotations

import re

from .matching import normalise
from .multiple_choice import LETTERS

LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
# A letter on its own: "B", "B.", "(B)", "B) text", "B: text"; or named: "answer is B", "option B".
_LEADING = re.compile(r"^\s*[\(\[]?([A-Z])(?:[\)\]\.:,]|\s*$)")
_ALONE = re.compile(r"\b([A-Z])\b")
# "A dog is ..." starts with an article, not with option A
_ARTICLE = re.compile(r"(?:^|[.!?]\s+)A\s+[a-z]")
_NAMED = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*[\(\[]?([A-Z])\b")


def choice_prompt(question: str, options: tuple[str, ...]) -> str:
    """The question, its lettered options one per line, and the instruction to answer with a letter."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    return "\n".join(lines + [LETTER_INSTRUCTION])


def parse_letter(text: str, options: tuple[str, ...]) -> str | None:
    """The option letter a generated answer gives, or None: a leading letter, a named one ("the answer is C"),
    the only valid letter standing alone in the text, or an option's text given in full."""
    valid = LETTERS[: len(options)]
    for pattern in (_LEADING, _NAMED):
        match = pattern.search(text)
        if match and match.group(1) in valid:
            return match.group(1)
    alone = {letter for letter in _ALONE.findall(_ARTICLE.sub(" ", text)) if letter in valid}
    if len(alone) == 1:
        return alone.pop()
    said = normalise(text)
    matches = [LETTERS[i] for i, option in enumerate(options) if normalise(option) == said]
    return matches[0] if len(matches) == 1 else None
