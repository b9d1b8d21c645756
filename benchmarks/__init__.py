"""Benchmarks of flash-vstream-hf. `python -m benchmarks` runs the suite in `flash_vstream_hf.benchmarks`."""
