"""`flash-vstream ask`: answers as of each timestamp, equal to answering offline on the same frames."""

import argparse
import json

import pytest

from flash_vstream_hf.cli import main
from flash_vstream_hf.commands.arguments import parse_time
from flash_vstream_hf.processing import read_video_frames
from flash_vstream_hf.tiny import write_synthetic_video

NEW_TOKENS = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_synthetic_video(tmp_path_factory.mktemp("v") / "video.mp4", num_frames=150, fps=10)


def offline_answer(model, processor, question: str, images: list) -> str:
    """The plain transformers path: all frames through the processor, one generate() call."""
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=prompt, videos=[images], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def streamed_answer(model, processor, question: str, images: list) -> str:
    """Frame-by-frame streaming of the same frames through `update_memory`, then generate() on the memory."""
    memory = None
    for image in images:
        memory = model.update_memory(
            processor.image_processor([image], return_tensors="pt")["pixel_values"][None], memory
        )
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=prompt, num_video_tokens=memory.get_seq_length(), return_tensors="pt")
    output = model.generate(**inputs, video_memory=memory, max_new_tokens=NEW_TOKENS, do_sample=False)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_answers_at_timestamps_match_answering_offline_on_the_same_frames(tiny, video, capsys):
    model, processor = tiny
    argv = ["ask", video, "--model", "tiny", "--json", "--max-new-tokens", str(NEW_TOKENS)]
    argv += ["--at", "00:00:09", "What happened by now?", "--at", "2.5", "What is moving?", "--at", "0:05", "And now?"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    answers = result["answers"]
    assert [a["at"] for a in answers] == [9.0, 2.5, 5.0]  # in the order asked
    assert [a["frames"] for a in answers] == [10, 3, 6]  # frames at 0, 1, ... s up to each time, inclusive
    assert [a["stream_time"] for a in answers] == [9.0, 2.0, 5.0]

    frames = read_video_frames(video, fps=1.0)
    one_frame_short = []
    for answer in answers:
        images = [f.image for f in frames if f.timestamp <= answer["at"] + 1e-6]
        assert answer["answer"] == streamed_answer(model, processor, answer["question"], images)
        if len(images) <= 6:  # before k-means starts, offline consolidation is frame-by-frame streaming
            assert answer["answer"] == offline_answer(model, processor, answer["question"], images)
        one_frame_short.append(streamed_answer(model, processor, answer["question"], images[:-1]))
        assert answer["memory_tokens"] == processor.num_video_tokens(len(images))
        assert answer["latency_s"] >= answer["time_to_first_token_s"] > 0
    assert result["status"]["frames_failed"] == 0
    # the tiny model's gibberish does depend on the frames: one frame less gives other answers
    assert one_frame_short != [a["answer"] for a in answers]


def test_text_output_and_a_time_past_the_end(video, capsys):
    assert main(["ask", video, "--model", "tiny", "--at", "1:00:00", "Anything?", "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "[01:00:00.0] Q: Anything?" in out
    assert "15 frames up to 00:00:14.0" in out  # the video ended first: the memory holds all of it
    assert "note: the stream ended at 00:00:14.0, before 01:00:00.0: answered from all of it" in out


def test_json_says_which_times_are_past_the_end(video, capsys):
    argv = ["ask", video, "--model", "tiny", "--json", "--max-new-tokens", "2", "--at", "99", "q", "--at", "3", "r"]
    assert main(argv) == 0
    answers = json.loads(capsys.readouterr().out)["answers"]
    assert [a["past_end"] for a in answers] == [True, False]
    assert "ended at 00:00:14.0" in answers[0]["note"] and answers[1]["note"] is None


def fail_after(monkeypatch, frames: int) -> None:
    """Make every video file fail to decode after `frames` sampled frames, as a file damaged mid-way does."""
    from flash_vstream_hf.streaming import FileSource, StreamInterruptedError

    decode = FileSource._frames

    def damaged(self, stop):
        for index, frame in enumerate(decode(self, stop)):
            if index == frames:
                raise StreamInterruptedError("decoding failed: invalid data found at packet 42")
            yield frame

    monkeypatch.setattr(FileSource, "_frames", damaged)


def test_a_stream_ending_early_shows_in_the_output_and_exit_status(video, monkeypatch, capsys):
    fail_after(monkeypatch, 3)  # frames at 0, 1 and 2 s, then a decode error
    argv = ["ask", video, "--model", "tiny", "--max-new-tokens", "2", "--at", "1", "early", "--at", "9", "late"]
    assert main([*argv, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    early, late = result["answers"]
    assert early["frames"] == 2 and early["note"] is None and not early["past_end"]
    assert late["frames"] == 3 and late["stream_time"] == 2.0 and "answer" in late
    assert "failed at 00:00:02.0, before 00:00:09.0" in late["note"] and "packet 42" in late["note"]
    assert result["status"]["state"] == "failed" and result["status"]["failed_at"] == 2.0

    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "note: the stream failed at 00:00:02.0, before 00:00:09.0" in captured.out
    assert "the stream ended early at 00:00:02.0" in captured.err and "packet 42" in captured.err


def test_bad_arguments_and_sources_give_clear_errors(video, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["ask", video, "--model", "tiny", "--at", "ten seconds", "q"])
    assert exited.value.code == 2 and "timestamp must be" in capsys.readouterr().err
    assert main(["ask", str(tmp_path / "none.mp4"), "--model", "tiny", "--at", "1", "q"]) == 1
    assert "none.mp4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ask", video, "--model", "tiny"])  # --at is required


def test_parse_time():
    assert parse_time("90") == 90 and parse_time("1:30") == 90 and parse_time("00:01:30.5") == 90.5
    assert parse_time("2:00:00") == 7200
    assert parse_time("90:00") == 5400 and parse_time("0:59.99") == 59.99  # the leading unit has no bound


@pytest.mark.parametrize("text, unit", [("1:75", "seconds"), ("1:60", "seconds"), ("1:60:00", "minutes"),
                                        ("0:00:60.5", "seconds"), ("2:75:10", "minutes")])  # fmt: skip
def test_minutes_and_seconds_past_59_are_rejected(text, unit, video, capsys):
    with pytest.raises(argparse.ArgumentTypeError, match=f"{unit} must be below 60"):
        parse_time(text)
    with pytest.raises(SystemExit) as exited:
        main(["ask", video, "--model", "tiny", "--at", text, "q"])
    assert exited.value.code == 2 and f"{unit} must be below 60" in capsys.readouterr().err
