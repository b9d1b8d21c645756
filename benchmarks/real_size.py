"""`python benchmarks/real_size.py`: fp16 and NF4 at the real CLIP ViT-L/14 + Vicuna-7B shapes.

The code lives in the package, with the rest of the benchmarks: `flash_vstream_hf.benchmarks.real_size`
(`python -m flash_vstream_hf.benchmarks.real_size` runs the same). This file keeps the checkout's command.
"""

import sys

from flash_vstream_hf.benchmarks.real_size import *  # noqa: F403 (its names, for readers and tests)
from flash_vstream_hf.benchmarks.real_size import main

if __name__ == "__main__":
    sys.exit(main())
