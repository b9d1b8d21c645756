"""Streaming evaluation: benchmarks run the way the model is used, one pass per video, each question asked when
the stream reaches its timestamp (`flash-vstream eval`).

- `items.py`: one question of a benchmark (`EvalItem`) and a reported problem (`Problem`);
- `vstream_qa.py`, `multiple_choice.py`: the VStream-QA (VS-/RVS-Ego, VS-/RVS-Movie) and StreamingBench /
  OVO-Bench annotation formats; `synthetic_export.py` writes this project's synthetic benchmark as VStream-QA;
- `frame_folder.py`, `videos.py`: videos as files or as folders of frames;
- `runner.py`: the streaming pass over one video and over a benchmark, resumable (`results.py`);
- `likelihood.py`, `choices.py`, `matching.py`: multiple-choice and exact-match scoring;
- `judge_prompt.py`, `judges.py`, `judge_cache.py`: the Video-ChatGPT / Flash-VStream GPT judge protocol with any
  OpenAI-compatible endpoint or a local transformers model, every answer cached on disk;
- `summary.py`: the table per question type and overall.
"""

from .items import EvalItem, LoadResult, Problem
from .runner import RunSettings, run_benchmark

__all__ = ["EvalItem", "LoadResult", "Problem", "RunSettings", "run_benchmark"]
