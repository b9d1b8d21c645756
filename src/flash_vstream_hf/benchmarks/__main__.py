"""`python -m flash_vstream_hf.benchmarks [--quick] [--json PATH]`: the benchmark suite (as `flash-vstream bench`)."""

import sys

from .cli import main

sys.exit(main())
