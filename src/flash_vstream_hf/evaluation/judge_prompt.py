"""The judge protocol of Video-ChatGPT's QA evaluation, which Flash-VStream used for every open-ended number it
published (`flash_vstream/eval_video/eval_activitynet_qa.py` in github.com/IVGSZ/Flash-VStream).

The messages below are that evaluation's prompt, word for word (its missing spaces and its example score of 4.8
for an "INTEGER" included): a judge's scores are only comparable to the published ones under the same prompt.
The original sent them to `gpt-3.5-turbo` at temperature 0.002 and read the reply with `ast.literal_eval`, as a
Python dict `{'pred': 'yes'|'no', 'score': 0-5}`. It counted an answer as correct when `'yes'` is in `pred`
(lower-cased), as wrong when `'no'` is, and averaged `int(score)`; `read_verdict` and `summary.py` do the same.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

ORIGINAL_MODEL = "gpt-3.5-turbo"
TEMPERATURE = 0.002
PROMPT_VERSION = "video-chatgpt-qa-v1"  # part of the cache key: a changed prompt never reuses old verdicts

SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if they match "
    "meaningfully. Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
USER = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    "Question: {question}\n"
    "Correct Answer: {answer}\n"
    "Predicted Answer: {prediction}\n\n"
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, "
    "with 5 indicating the highest meaningful match. "
    "Please generate the response in the form of a Python dictionary string with keys 'pred' and 'score', where "
    "value of 'pred' is  a string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {{'pred': 'yes', 'score': 4.8}}."
)

_DICT = re.compile(r"\{[^{}]*\}", re.DOTALL)


class GarbageVerdict(ValueError):
    """The judge's reply is not a `{'pred': ..., 'score': ...}` dict the protocol can read."""


@dataclass(frozen=True)
class Verdict:
    """A judge's reading of one answer: `correct` (the protocol's yes), `score` (0-5, as `int(score)`), the
    `pred` string as given, and the raw reply."""

    correct: bool
    score: int
    pred: str
    raw: str

    def to_dict(self) -> dict:
        return {"correct": self.correct, "score": self.score, "pred": self.pred, "raw": self.raw}


def messages(question: str, answer: str, prediction: str) -> list[dict]:
    """The chat messages of the judge's request for one answer."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER.format(question=question, answer=answer, prediction=prediction)},
    ]


def read_verdict(reply: str) -> Verdict:
    """The verdict in a judge's reply; `GarbageVerdict` when there is none.

    The original read the whole reply with `ast.literal_eval`; here the first `{...}` of the reply is read the
    same way (or as JSON), so a reply wrapped in a code fence or a sentence still counts. `pred` must say yes or
    no and `score` must be a number whose `int()` is 0-5.
    """
    candidates = [reply.strip()] + _DICT.findall(reply)
    for text in candidates:
        value = _literal(text)
        if isinstance(value, dict):
            return _checked(value, reply)
    raise GarbageVerdict(f"no {{'pred': ..., 'score': ...}} dict in the judge's reply: {reply[:200]!r}")


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        pass
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def _checked(value: dict, reply: str) -> Verdict:
    pred, score = value.get("pred"), value.get("score")
    if not isinstance(pred, str) or not ("yes" in pred.lower() or "no" in pred.lower()):
        raise GarbageVerdict(f"'pred' must be 'yes' or 'no', got {pred!r}")
    try:
        score_int = int(score) if not isinstance(score, (bool, str)) else int(float(score))
    except (TypeError, ValueError, OverflowError):
        raise GarbageVerdict(f"'score' must be a number 0-5, got {score!r}") from None
    if not 0 <= score_int <= 5:
        raise GarbageVerdict(f"'score' must be 0-5, got {score!r}")
    # the original's reading: yes if 'yes' is in pred, else no if 'no' is
    return Verdict(correct="yes" in pred.lower(), score=score_int, pred=pred, raw=reply)
