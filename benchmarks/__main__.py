"""`python -m benchmarks [--quick] [--json PATH]`: the benchmark suite (same as `flash-vstream bench`).

The suite's code lives in the installed package (`flash_vstream_hf.benchmarks`) so `flash-vstream bench` works
from any install; this entry point only needs the package installed (`pip install -e .` in a checkout).
"""

import sys

try:
    from flash_vstream_hf.benchmarks.cli import main
except ImportError as error:  # pragma: no cover - depends on the environment
    sys.exit(f"python -m benchmarks needs flash-vstream-hf installed (pip install -e . in the checkout): {error}")

sys.exit(main())
