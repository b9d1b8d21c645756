"""A stream host without Ray: sources checked before anything opens (media root, address guard, pushed frames),
checkpoints every K frames that a new host resumes from exactly, and questions about several streams answered in
one batched generate with the answers they get one at a time."""

from __future__ import annotations

import base64
import os
import threading

import pytest

from flash_vstream_hf import FlashVStreamMemory, StreamingSession
from flash_vstream_hf.cluster.checkpoints import memory_from_bytes, read_checkpoint
from flash_vstream_hf.cluster.errors import ApiError
from flash_vstream_hf.cluster.host import StreamHost
from flash_vstream_hf.cluster.settings import ClusterSettings
from flash_vstream_hf.cluster.store import CheckpointStore
from flash_vstream_hf.streaming import FileSource
from flash_vstream_hf.synthetic.checkpoint import demo_model
from flash_vstream_hf.tiny import synthetic_frame, write_synthetic_video

from .helpers import assert_same_memory, http_server, png

pytestmark = pytest.mark.usefixtures("one_torch_thread")
K = 7
QUESTION = "how many shapes are there now"


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    write_synthetic_video(folder / "walk.mp4", num_frames=40, fps=1)
    write_synthetic_video(folder / "short.mp4", num_frames=12, fps=1)
    return folder


def settings(tmp_path, videos, **overrides) -> ClusterSettings:
    values = {"model": "demo", "store": str(tmp_path / "store"), "media_root": str(videos), "checkpoint_every": K,
              "streams_per_host": 3, "max_new_tokens": 4} | overrides  # fmt: skip
    return ClusterSettings(**values)


def whole_file(path) -> FlashVStreamMemory:
    model, processor = demo_model()
    with StreamingSession(model, processor) as session:
        session.start(FileSource(path, fps=1.0))
        assert session.wait(120)
        return session.snapshot().memory


def wait(host: StreamHost, stream_id: str) -> None:
    assert host._streams[stream_id].session.wait(120)


def test_checkpoints_every_k_frames_and_a_new_host_resumes_exactly_where_one_stopped(tmp_path, videos):
    first = StreamHost("a", settings(tmp_path, videos))
    store = CheckpointStore(tmp_path / "store")
    first.open_stream({"stream_id": "s", "kind": "file", "source": "walk.mp4", "speed": 8.0})
    session = first._streams["s"].session
    session.wait_for_frames(2 * K + 3, timeout=120)
    while (checkpoint := read_checkpoint(store, "s")) is None or checkpoint.frames_seen < 2 * K:
        session.wait_for_frames(session.snapshot().frames + 1, timeout=10)
    assert checkpoint.frames_seen % K == 0
    first.close_stream("s", forget=False)  # the host goes away mid-file; its last frames are flushed
    stopped_at = read_checkpoint(store, "s")
    assert 2 * K <= stopped_at.frames_seen < 40
    assert store.list("streams/s") == ["streams/s/checkpoint.json", f"streams/s/memory-{stopped_at.frames_seen:012d}.safetensors"]

    second = StreamHost("b", settings(tmp_path, videos))
    status = second.open_stream({"stream_id": "s", "kind": "file", "source": "walk.mp4"}, resume=True)
    assert status["resumed_from_frames"] == stopped_at.frames_seen
    wait(second, "s")
    resumed = memory_from_bytes(second.memory_file("s"), FlashVStreamMemory)
    assert_same_memory(resumed, whole_file(videos / "walk.mp4"))
    second.close_stream("s")  # forget: its checkpoints go
    assert store.list("streams/s") == []


def test_an_fsspec_store_holds_checkpoints_a_host_resumes_from(tmp_path, videos):
    config = settings(tmp_path, videos, store="memory://cluster-host-test")
    host = StreamHost("a", config)
    host.open_stream({"stream_id": "m", "kind": "file", "source": "short.mp4"})
    wait(host, "m")
    host.close_stream("m", forget=False)
    again = StreamHost("b", config)
    assert again.open_stream({"stream_id": "m", "kind": "file", "source": "short.mp4"}, resume=True)[
        "resumed_from_frames"] == 12  # fmt: skip
    wait(again, "m")
    assert_same_memory(memory_from_bytes(again.memory_file("m"), FlashVStreamMemory), whole_file(videos / "short.mp4"))


@pytest.mark.parametrize("source", ["/etc/passwd", "../walk.mp4", "escape.mp4", "nested/../../walk.mp4", "."])
def test_file_sources_outside_the_media_root_are_refused(tmp_path, videos, source):
    (videos / "escape.mp4").unlink(missing_ok=True)
    os.symlink(videos.parent, videos / "escape.mp4")
    host = StreamHost("a", settings(tmp_path, videos))
    with pytest.raises(ApiError) as refused:
        host.open_stream({"stream_id": "x", "kind": "file", "source": source})
    assert refused.value.status == 403 and refused.value.field == "source"
    assert host.ping()["streams"] == {}


def test_without_a_media_root_no_file_is_opened(tmp_path, videos):
    host = StreamHost("a", settings(tmp_path, videos, media_root=None))
    with pytest.raises(ApiError, match="without --media-root") as refused:
        host.open_stream({"stream_id": "x", "kind": "file", "source": "walk.mp4"})
    assert refused.value.status == 403


def test_url_sources_to_this_machine_are_refused_before_any_request_unless_allowed(tmp_path, videos):
    recorder = http_server(videos)
    with recorder as url:
        guarded = StreamHost("a", settings(tmp_path, videos))
        for spelling in (f"{url}/walk.mp4", f"http://localhost:{recorder.port}/walk.mp4",
                         f"http://2130706433:{recorder.port}/walk.mp4", f"http://[::ffff:127.0.0.1]:{recorder.port}/"):
            with pytest.raises(ApiError) as refused:
                guarded.open_stream({"stream_id": "u", "kind": "url", "source": spelling})
            assert refused.value.status == 400 and "--allow-private-urls" in refused.value.message
        assert recorder.requests == []

        allowed = StreamHost("b", settings(tmp_path, videos, allow_private_urls=True))
        allowed.open_stream({"stream_id": "u", "kind": "url", "source": f"{url}/short.mp4"})
        wait(allowed, "u")
        assert allowed.status("u")["frames_seen"] == 12 and recorder.requests


def test_pushed_frames_are_checked_and_a_full_queue_says_push_later(tmp_path, videos):
    host = StreamHost("a", settings(tmp_path, videos, push_queue=4))
    host.open_stream({"stream_id": "p", "kind": "push"})
    good = [(float(i), base64.b64decode(png(synthetic_frame(i)))) for i in range(3)]
    assert host.push_frames("p", good)["accepted"] == 3
    with pytest.raises(ApiError) as late:
        host.push_frames("p", [(1.5, good[0][1])])
    assert (late.value.status, late.value.field) == (422, "frames[0].timestamp")
    with pytest.raises(ApiError) as bad:
        host.push_frames("p", [(9.0, good[0][1]), (10.0, b"<svg/>")])
    assert (bad.value.status, bad.value.field) == (400, "frames[1].image")
    host._streams["p"].session.stop()  # nobody reads the queue now: it fills
    with pytest.raises(ApiError) as full:
        host.push_frames("p", [(20.0 + i, good[0][1]) for i in range(5)])
    assert full.value.status == 429 and full.value.retry_after
    host.open_stream({"stream_id": "f", "kind": "file", "source": "short.mp4"})
    with pytest.raises(ApiError) as not_push:
        host.push_frames("f", good)
    assert not_push.value.status == 409


def assert_asked_together_as_alone(host: StreamHost, stream_ids: list[str]) -> dict[str, dict]:
    """Asks QUESTION about each stream alone, then about all of them at once from as many threads: the answers
    at once come from one batch and equal the ones alone. Returns the answers at once, by stream id."""
    alone = {sid: host._streams[sid].session.ask(QUESTION, max_new_tokens=4).text for sid in stream_ids}
    batches_before, answers, start = host.batcher.batches, {}, threading.Barrier(len(stream_ids))

    def ask(stream_id):
        start.wait()
        answers[stream_id] = host.ask(stream_id, QUESTION, 4)

    threads = [threading.Thread(target=ask, args=(sid,)) for sid in stream_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert host.batcher.batches - batches_before == 1
    assert {sid: answer["answer"] for sid, answer in answers.items()} == alone
    return answers


def test_questions_about_several_streams_arriving_together_are_answered_in_one_batch(tmp_path, videos):
    host = StreamHost("a", settings(tmp_path, videos))
    for stream_id, source in (("one", "walk.mp4"), ("two", "short.mp4"), ("three", "walk.mp4")):
        host.open_stream({"stream_id": stream_id, "kind": "file", "source": source})
        wait(host, stream_id)
    answers = assert_asked_together_as_alone(host, ["one", "two", "three"])
    assert answers["two"]["frames_seen"] == 12 and answers["one"]["frames_seen"] == 40
    with pytest.raises(ApiError) as unknown:
        host.ask("nope", QUESTION)
    assert unknown.value.status == 404


def test_a_host_of_a_v2_model_batches_questions_checkpoints_and_resumes(tmp_path, videos):
    from flash_vstream_hf.qwen2vl.memory_flash_vstream_qwen2vl import FlashVStreamQwen2VLMemory
    from flash_vstream_hf.tiny.qwen2vl import save_tiny_qwen2vl

    config = settings(tmp_path, videos, model=save_tiny_qwen2vl(tmp_path / "v2"))
    host = StreamHost("a", config)
    for stream_id, source in (("one", "walk.mp4"), ("two", "short.mp4")):
        host.open_stream({"stream_id": stream_id, "kind": "file", "source": source})
        wait(host, stream_id)
    assert_asked_together_as_alone(host, ["one", "two"])
    host.close_stream("one", forget=False)
    checkpoint = read_checkpoint(CheckpointStore(tmp_path / "store"), "one")
    assert checkpoint.frames_seen == 40  # flushed when it closed
    again = StreamHost("b", config)
    assert again.open_stream({"stream_id": "one", "kind": "file", "source": "walk.mp4"}, resume=True)[
        "resumed_from_frames"] == 40  # fmt: skip
    resumed = memory_from_bytes(again.memory_file("one"), FlashVStreamQwen2VLMemory)
    assert resumed.frames_seen == 40 and resumed.streaming_mode == "bounded"
    host.close_all()
    again.close_all()
