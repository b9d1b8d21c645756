"""Entry points from a checkout: `python -m benchmarks` (the suite) and `python benchmarks/<name>.py` (the standalone
measurements). All benchmark code lives in the package, `flash_vstream_hf.benchmarks`; these files only start it."""
