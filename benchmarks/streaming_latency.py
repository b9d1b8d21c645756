"""`python benchmarks/streaming_latency.py`: ingest speed and answer latency of a `StreamingSession`.

The code lives in the package, with the rest of the benchmarks: `flash_vstream_hf.benchmarks.streaming_latency`
(`python -m flash_vstream_hf.benchmarks.streaming_latency` runs the same). This file keeps the checkout's command.
"""

from flash_vstream_hf.benchmarks.streaming_latency import *  # noqa: F403 (its names, for readers and tests)
from flash_vstream_hf.benchmarks.streaming_latency import main

if __name__ == "__main__":
    main()
