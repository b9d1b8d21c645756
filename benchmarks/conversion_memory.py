"""`python benchmarks/conversion_memory.py`: peak memory of converting a 7B-sized original checkpoint.

The code lives in the package, with the rest of the benchmarks: `flash_vstream_hf.benchmarks.conversion_memory`
(`python -m flash_vstream_hf.benchmarks.conversion_memory` runs the same). This file keeps the checkout's command.
"""

import sys

from flash_vstream_hf.benchmarks.conversion_memory import *  # noqa: F403 (its names, for readers and tests)
from flash_vstream_hf.benchmarks.conversion_memory import main

if __name__ == "__main__":
    sys.exit(main())
