"""A synthetic stream world with ground truth and questions, and the small Flash-VStream trained on it.

`world.py` draws the streams, `questions.py` asks about them; `spec.py`, `batches.py`, `training.py`,
`evaluation.py` and `checkpoint.py` build, train, score and load the demo model (`flash-vstream train-demo`,
`flash-vstream demo --eval`).
"""

from .questions import FAMILIES, Question, QuestionMaker, ask
from .world import COLOUR_NAMES, SHAPES, SyntheticStream

__all__ = ["FAMILIES", "COLOUR_NAMES", "SHAPES", "Question", "QuestionMaker", "SyntheticStream", "ask"]
