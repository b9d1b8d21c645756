"""Batch work on Ray Data (`flash_vstream_hf.cluster.batch`): `flash-vstream index` (a memory file per video) and
`flash-vstream eval --ray`, each checked against the single-process path on the same inputs.

One local Ray (2 CPUs) serves the whole module and is shut down at its end; its auth token is given in the
environment, so nothing is written under ~/.ray. The commands run in this process, where they find that Ray and
use it as it is; one test runs `index` in a subprocess that joins it with `--address`."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from flash_vstream_hf import cli
from flash_vstream_hf.cluster.batch.memories import memory_names
from flash_vstream_hf.cluster.batch.pool import plan_actors
from flash_vstream_hf.commands import export_synthetic
from flash_vstream_hf.streaming import StreamingSession
from flash_vstream_hf.tiny import write_synthetic_video

from .eval_helpers import read_predictions, run_eval, stable

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray for the module: its GCS address; shut down (every process it started) at the end."""
    saved = {key: os.environ.get(key) for key in RAY_ENV}
    os.environ.update(RAY_ENV)
    _reload_auth_settings()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reload_auth_settings()


def _reload_auth_settings() -> None:
    """Ray reads RAY_AUTH_MODE and the token once, when imported; make it read them again (what ray.init does
    itself when it turns token auth on), so that the token given here is used and none is written."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """`a.mp4` (4 s), `b.mp4` (6 s) and `bad.mp4` (not a video)."""
    folder = tmp_path_factory.mktemp("videos")
    write_synthetic_video(folder / "a.mp4", num_frames=40, fps=10)
    write_synthetic_video(folder / "b.mp4", num_frames=60, fps=10)
    (folder / "bad.mp4").write_bytes(b"not a video " * 100)
    return folder


def content(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's header (parsed) and its tensor bytes. The header's metadata keys come out in a
    different order in each process (safetensors 0.8 writes them from a hash map), so files from two processes
    are compared as header and bytes, not as files."""
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def single_process_memory(tiny, video: Path, path: Path, fps: float, seed: int) -> Path:
    """The memory one process builds from `video` with the streaming path: one frame per vision call."""
    model, processor = tiny
    session = StreamingSession(model, processor, memory=model.new_memory(1, seed=seed), backlog="block", max_batch=1)
    session.start(str(video), fps=fps, speed=None)
    with session:
        session.wait()
        session.save_memory(path)
    return path


def index(argv: list[str]) -> int:
    return cli.main(["index", *argv])


# -- without Ray ----------------------------------------------------------------------------------------------------


def test_memory_files_are_named_after_their_videos_and_collisions_are_refused(tmp_path, capsys):
    assert memory_names(["x/a.mp4", "y/b.mkv", "x/a.mp4"]) == {"x/a.mp4": "a.safetensors", "y/b.mkv": "b.safetensors"}
    for pair in (["x/clip.mp4", "y/clip.mp4"], ["clip.mp4", "CLIP.mkv"]):
        with pytest.raises(ValueError, match="would both write the memory file"):
            memory_names(pair)
    # refused while the command line is parsed: no Ray, nothing written
    with pytest.raises(SystemExit) as exited:
        cli.parse(["index", "x/clip.mp4", "y/clip.mp4", "--out", str(tmp_path / "out"), "--model", "tiny"])
    assert exited.value.code == 2
    assert (
        "videos x/clip.mp4 and y/clip.mp4 would both write the memory file clip.safetensors" in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_the_actor_pool_takes_fractional_cpus_or_one_gpu_each():
    two_cpus = plan_actors(2, {"CPU": 2.0})
    assert (two_cpus.actors, two_cpus.num_cpus, two_cpus.num_gpus, two_cpus.threads) == (2, 0.75, 0, 1)
    assert plan_actors(None, {"CPU": 2.0}).actors == 1 and plan_actors(8, {"CPU": 16.0}, work=3).actors == 3
    gpus = plan_actors(None, {"CPU": 16.0, "GPU": 4.0})
    assert (gpus.actors, gpus.num_gpus) == (4, 1)
    with pytest.raises(ValueError, match="each actor takes one"):
        plan_actors(5, {"CPU": 16.0, "GPU": 4.0})
    with pytest.raises(ValueError, match="too few for 40 actors"):
        plan_actors(40, {"CPU": 2.0})


@pytest.mark.parametrize("option", [["--address", "head:6379"], ["--actors", "2"]])
def test_eval_refuses_cluster_options_without_ray(option, capsys):
    argv = ["eval", "annotations.json", "--format", "rvs", "--output", "out", "--model", "tiny", *option]
    with pytest.raises(SystemExit) as exited:
        cli.parse(argv)
    assert exited.value.code == 2 and f"{option[0]} is for --ray" in capsys.readouterr().err


# -- on Ray ---------------------------------------------------------------------------------------------------------


def test_index_builds_what_one_process_builds_resumes_and_records_bad_videos(ray_address, videos, tiny, tmp_path,
                                                                             capsys):  # fmt: skip
    out = tmp_path / "memories"
    argv = [str(videos / name) for name in ("a.mp4", "b.mp4", "bad.mp4")]
    argv += ["--out", str(out), "--model", "tiny", "--fps", "2", "--memory-seed", "7", "--actors", "2"]
    assert index(argv) == 1  # bad.mp4 failed; the others are built
    printed = capsys.readouterr()
    assert "index: 2 done, 0 skipped (already built), 1 failed; 20 frames in" in printed.out
    assert f"failed {videos / 'bad.mp4'}: cannot open" in printed.err
    errors = json.loads((out / "index-errors.json").read_text())
    assert [entry["video"] for entry in errors] == [str(videos / "bad.mp4")] and errors[0]["error"]
    for name, frames in (("a", 8), ("b", 12)):
        reference = single_process_memory(tiny, videos / f"{name}.mp4", tmp_path / f"{name}.ref", fps=2.0, seed=7)
        assert content(out / f"{name}.safetensors") == content(reference), name
        assert json.loads(content(reference)[0]["__metadata__"]["frames_seen"]) == frames
    # another seed gives another memory (the seed reached the actors)
    other = single_process_memory(tiny, videos / "a.mp4", tmp_path / "a.seed8", fps=2.0, seed=8)
    assert content(other)[1] != content(out / "a.safetensors")[1]

    # rerun: both built files are skipped, the bad video fails again; a damaged file is built again
    built = (out / "a.safetensors").read_bytes()
    (out / "b.safetensors").write_bytes((out / "b.safetensors").read_bytes()[:-100])
    assert index(argv) == 1
    printed = capsys.readouterr().out
    assert f"skipped {videos / 'a.mp4'}: {out / 'a.safetensors'} is already built (8 frames)" in printed
    assert "index: 1 done, 1 skipped (already built), 1 failed; 12 frames" in printed
    assert (out / "a.safetensors").read_bytes() == built
    assert content(out / "b.safetensors") == content(tmp_path / "b.ref")

    # everything built: nothing left for Ray, and the errors file goes
    assert index([*argv[:2], *argv[3:]]) == 0
    assert "index: 0 done, 2 skipped" in capsys.readouterr().out and not (out / "index-errors.json").exists()
    # other settings into the same folder are refused
    assert index([*argv[:2], "--out", str(out), "--model", "tiny", "--fps", "1"]) == 2
    assert "fps: 2.0 then, 1.0 now" in capsys.readouterr().err


def test_index_builds_v2_memories_and_a_rerun_skips_them(ray_address, videos, tmp_path, capsys):
    from flash_vstream_hf.qwen2vl.memory_flash_vstream_qwen2vl import FlashVStreamQwen2VLMemory
    from flash_vstream_hf.tiny.qwen2vl import save_tiny_qwen2vl

    out, model = tmp_path / "v2-memories", save_tiny_qwen2vl(tmp_path / "v2")
    argv = [str(videos / "a.mp4"), "--out", str(out), "--model", model, "--fps", "2", "--actors", "1"]
    assert index(argv) == 0
    assert "index: 1 done, 0 skipped (already built), 0 failed; 8 frames" in capsys.readouterr().out
    built = (out / "a.safetensors").read_bytes()
    assert FlashVStreamQwen2VLMemory.load(out / "a.safetensors").frames_seen == 8
    assert index(argv) == 0  # the v2 file is recognised as complete: nothing is built again
    assert "index: 0 done, 1 skipped (already built), 0 failed" in capsys.readouterr().out
    assert (out / "a.safetensors").read_bytes() == built


def test_index_joins_a_running_cluster_with_address(ray_address, videos, tmp_path):
    out = tmp_path / "joined"
    command = [sys.executable, "-m", "flash_vstream_hf", "index", str(videos / "a.mp4"), "--out", str(out),
               "--model", "tiny", "--address", ray_address]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(cli.__file__).parents[1]),
                                                                        os.environ.get("PYTHONPATH")]))}  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert "index: 1 done, 0 skipped (already built), 0 failed; 4 frames" in done.stdout
    assert (out / "a.safetensors").is_file()
    assert ray.cluster_resources()["CPU"] == 2  # the cluster it joined is still up: it only disconnected


def test_eval_on_ray_gives_the_single_process_results_and_resumes(ray_address, videos, tmp_path, capsys):
    bench = tmp_path / "bench"
    export = argparse.Namespace(output=str(bench), streams=2, length=8, per_family=1, first_seed=0)
    assert export_synthetic.run(export) == 0
    annotations = json.loads((bench / "test_qa.json").read_text())
    # a question about a video that is not a video: a reported problem, not the end of the run
    (bench / "videos" / "broken.mp4").write_bytes((videos / "bad.mp4").read_bytes())
    annotations.append({**annotations[0], "id": "broken_q", "video_id": "broken"})
    (bench / "test_qa.json").write_text(json.dumps(annotations))
    argv = [str(bench / "test_qa.json"), "--format", "rvs", "--videos", str(bench / "videos"), "--model", "tiny",
            "--max-new-tokens", "3", "--no-progress"]  # fmt: skip

    assert run_eval([*argv, "--output", str(tmp_path / "one")]) == 1
    assert run_eval([*argv, "--output", str(tmp_path / "ray"), "--ray", "--actors", "2"]) == 1
    capsys.readouterr()
    one, on_ray = (read_predictions(tmp_path / name / "predictions.jsonl") for name in ("one", "ray"))
    assert len(one) == len(annotations) - 1 >= 6 and "broken_q" not in one
    assert {key: stable(record) for key, record in on_ray.items()} == {
        key: stable(record) for key, record in one.items()
    }
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert [(p["id"], p["stage"]) for p in summary["problems"]] == [("broken_q", "video")]
    single = json.loads((tmp_path / "one" / "summary.json").read_text())["rows"]
    assert summary["rows"].keys() == single.keys()
    for key, row in summary["rows"].items():  # the same scores; timings differ
        assert {k: v for k, v in row.items() if not k.endswith("_s")} == {
            k: v for k, v in single[key].items() if not k.endswith("_s")
        }, key

    # resumable: drop the last three answers; the rerun asks exactly those again
    path = tmp_path / "ray" / "predictions.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-3]))
    assert run_eval([*argv, "--output", str(tmp_path / "ray"), "--ray", "--actors", "2"]) == 1
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["written_this_run"] == 3
    again = read_predictions(path)
    assert {key: stable(record) for key, record in again.items()} == {
        key: stable(record) for key, record in one.items()
    }


def test_eval_on_ray_of_a_v2_folder_gives_the_single_process_results(ray_address, tmp_path, capsys):
    from flash_vstream_hf.tiny.qwen2vl import save_tiny_qwen2vl

    bench = tmp_path / "bench"
    export = argparse.Namespace(output=str(bench), streams=2, length=8, per_family=1, first_seed=0)
    assert export_synthetic.run(export) == 0
    argv = [str(bench / "test_qa.json"), "--format", "rvs", "--videos", str(bench / "videos"),
            "--model", save_tiny_qwen2vl(tmp_path / "v2"), "--max-new-tokens", "3", "--no-progress"]  # fmt: skip
    assert run_eval([*argv, "--output", str(tmp_path / "one")]) == 0
    assert run_eval([*argv, "--output", str(tmp_path / "ray"), "--ray", "--actors", "2"]) == 0
    capsys.readouterr()
    one, on_ray = (read_predictions(tmp_path / name / "predictions.jsonl") for name in ("one", "ray"))
    assert len(one) == len(json.loads((bench / "test_qa.json").read_text())) >= 6
    assert {key: stable(record) for key, record in on_ray.items()} == {
        key: stable(record) for key, record in one.items()
    }
