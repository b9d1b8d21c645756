"""`python -m flash_vstream_hf.benchmarks.real_size` in its CPU small-shape mode: the whole pipeline (random fp16 checkpoint written from the
meta device, fp16 and NF4 loading, streaming, time to first token, ingest) runs and reports consistent figures."""

from __future__ import annotations

import json
import math

import pytest


@pytest.fixture(scope="module")
def real_size():
    from flash_vstream_hf.benchmarks import real_size

    return real_size


def test_small_cpu_run_reports_fp16_and_nf4(real_size, tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = ["--small", "--device", "cpu", "--frames", "1", "30", "--chunk", "10", "--repeats", "1",
            "--ingest-frames", "2", "--json", str(out)]  # fmt: skip
    assert real_size.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == [1, 30] and set(report["variants"]) == {"fp16", "nf4"}
    fp16, nf4 = report["variants"]["fp16"], report["variants"]["nf4"]
    for result in (fp16, nf4):
        # the byte count of the loaded weights matches the one computed from parameter counts
        assert result["weights_gb"] == pytest.approx(result["weights_computed_gb"], rel=1e-3)
        assert all(math.isfinite(t) and t > 0 for t in result["ttft_s"].values())
        assert result["memory_tokens"] == 681  # the released layout, full after 26 frames
        assert result["ingest_fps"] > 0 and result["memory_only_fps"] > 0
    assert nf4["weights_gb"] < fp16["weights_gb"]
    assert nf4["memory_mb"] == fp16["memory_mb"]  # the memory is fp16 in both: only the LM is quantized
    table = capsys.readouterr().out
    assert "| nf4 |" in table and "TTFT 30 fr (s)" in table and "16.03 GB" in table


def test_computed_weights_of_the_real_shape(real_size):
    """NF4 keeps the vision tower, projector, memory attention and lm_head in fp16 and packs the 6.5B language
    model linear weights into 4.5 bits each: about a third of the fp16 weights, so it fits a 12 GB GPU."""
    config = real_size.real_config()
    fp16 = real_size.computed_weights_bytes(config, "fp16")
    nf4 = real_size.computed_weights_bytes(config, "nf4")
    parameters = sum(p.numel() for p in real_size.empty_model(config).parameters())
    assert 7.0e9 < parameters < 7.1e9
    assert fp16 == pytest.approx(2 * parameters, rel=1e-4)
    assert 0.3 < nf4 / fp16 < 0.36
