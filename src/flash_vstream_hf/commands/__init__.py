"""Subcommands of `flash-vstream` (see `flash_vstream_hf.cli`)."""
