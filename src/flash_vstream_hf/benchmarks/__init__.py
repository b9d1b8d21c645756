"""Benchmark suite: Flash-VStream's STAR memory against the alternatives, at real CLIP ViT-L/14 / Vicuna-7B shapes.

Run it with `flash-vstream bench` (or `python -m flash_vstream_hf.benchmarks`); `--quick` gives CI-sized runs.
Each measurement lives in its own module:

- `update_cost`: memory update cost per frame and peak RSS vs frames seen, without the vision encoder;
- `ttft`: time to first token vs frames seen;
- `ingest`: frames per second through a ViT-L/14-shaped vision tower and the share spent in consolidation;
- `baselines`: the alternatives (the released code's offline re-consolidation, naive full context, recent window);
- `report`: tables, targets and the JSON file.

Standalone measurements, each run as `python -m flash_vstream_hf.benchmarks.<name>`:

- `streaming_latency`: ingest fps and answer latency of a `StreamingSession`, with and without concurrent ingest;
- `real_size`: fp16 and NF4 at the real shapes (weights, peak GPU memory, time to first token, ingest);
- `conversion_memory`: peak RSS of `flash-vstream convert` on a 7B-sized original checkpoint.
- `batched_answers`: answers per second of questions about different streams batched in one `generate()` call
  (`streaming.batched_answers`), on the shipped demo model (trained weights, not random ones).

Everything uses random weights and synthetic inputs (no download); only shapes matter for cost.
"""
