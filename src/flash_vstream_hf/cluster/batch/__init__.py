"""Batch work on Ray Data: memory files for many videos (`flash-vstream index`) and benchmarks spread over a
cluster (`flash-vstream eval --ray`). Each runs the single-process path (`StreamingSession`, the evaluation
runner) in a pool of actors that load the model once; nothing here ingests or answers on its own.

- `memories.py`: one video's memory file, its name, what makes an output folder resumable (no Ray);
- `pool.py`: joining or starting a cluster, sizing the actor pool, running rows through it;
- `index.py`: the index job; `evaluation.py`: the eval job.

Ray is imported only inside the functions that use it, so the package imports without it.
"""
