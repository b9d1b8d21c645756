"""Questions about different streams answered in one batched generate() call: the same answers as one at a time,
one memory per row, a bad row failing alone; `FlashVStreamMemory.stack`; the `AnswerBatcher`."""

import threading
import time

import pytest
import torch

from flash_vstream_hf import FlashVStreamMemory
from flash_vstream_hf.streaming import NoFramesError, StreamSnapshot
from flash_vstream_hf.streaming.answering import build_inputs, generate_answer
from flash_vstream_hf.streaming.batched_answers import AnswerBatcher, answer_together, check_batchable

from .helpers import assert_same_memory

NEW_TOKENS = 8
GREEDY = {"max_new_tokens": NEW_TOKENS}
# (frames fed, seed): 2 frames give fewer memory tokens than 9 or 30; the two 9-frame streams differ only by their
# frames, so only the right memory in the right row gives each its answer
STREAMS = [(2, 0), (9, 1), (9, 2), (30, 3)]
QUESTIONS = ["what?", "What is moving in the video right now, and where?", "what?", "colour of it?"]


@pytest.fixture(scope="module")
def snapshots(model, config):
    size = config.vision_config.image_size
    views = []
    for count, seed in STREAMS:
        pixels = torch.randn(1, count, 3, size, size, generator=torch.Generator().manual_seed(seed))
        views.append(StreamSnapshot(model.update_memory(pixels), stream_time=float(count)))
    return views


class CountingGenerate:
    """Wraps `model.generate`: counts the calls and keeps what each returned and the batch sizes it got."""

    def __init__(self, model, monkeypatch):
        self.calls, self.batch_sizes, self.outputs = 0, [], []
        original = model.generate

        def generate(*args, **kwargs):
            self.calls += 1
            self.batch_sizes.append(kwargs["input_ids"].shape[0])
            out = original(*args, **kwargs)
            self.outputs.append((kwargs["input_ids"].shape[1], out))
            return out

        monkeypatch.setattr(model, "generate", generate)


def alone_ids(model, processor, question, snapshot, **kwargs) -> list[int]:
    inputs = build_inputs(processor, question, snapshot.memory.get_seq_length(), model.device)
    out = model.generate(**inputs, video_memory=snapshot.memory.snapshot(), **{"do_sample": False, **kwargs})
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def test_the_streams_differ_in_token_counts_and_answers(model, processor, snapshots):
    assert len({s.memory.get_seq_length() for s in snapshots}) >= 2  # rows of different placeholder counts
    same_question = [alone_ids(model, processor, "what?", s, **GREEDY) for s in snapshots]
    assert len({tuple(ids) for ids in same_question}) >= 2  # crossed memories would show


def test_a_batch_answers_every_row_as_it_is_answered_alone(model, processor, snapshots, monkeypatch):
    alone = [generate_answer(model, processor, q, s, GREEDY, time.perf_counter()) for q, s in zip(QUESTIONS, snapshots)]
    ids_alone = [alone_ids(model, processor, q, s, **GREEDY) for q, s in zip(QUESTIONS, snapshots)]
    counter = CountingGenerate(model, monkeypatch)
    together = answer_together(model, processor, list(zip(QUESTIONS, snapshots)), GREEDY)
    assert counter.calls == 1 and counter.batch_sizes == [len(QUESTIONS)]
    assert [a.text for a in together] == [a.text for a in alone]
    assert [a.new_tokens for a in together] == [a.new_tokens for a in alone]
    assert len({a.text for a in together}) >= 2
    prompt_width, out = counter.outputs[0]
    for row, ids in enumerate(ids_alone):
        assert out[row, prompt_width : prompt_width + len(ids)].tolist() == ids
    for answer, snapshot, question in zip(together, snapshots, QUESTIONS):
        assert (answer.question, answer.frames, answer.stream_time) == (question, snapshot.frames, snapshot.stream_time)
        assert answer.memory_tokens == snapshot.memory.get_seq_length() and answer.snapshot is snapshot
        assert 0 < answer.time_to_first_token <= answer.latency


def test_reordered_requests_give_reordered_answers(model, processor, snapshots):
    requests = list(zip(QUESTIONS, snapshots))
    forward = answer_together(model, processor, requests, GREEDY)
    backward = answer_together(model, processor, requests[::-1], GREEDY)
    assert [a.text for a in backward] == [a.text for a in forward][::-1]


def test_a_stream_asked_twice_in_one_batch_gets_the_same_answer_twice(model, processor, snapshots):
    answers = answer_together(model, processor, [("what?", snapshots[1]), ("what?", snapshots[1])], GREEDY)
    assert answers[0].text == answers[1].text


def test_beam_search_batches_each_row_as_alone(model, processor, snapshots):
    beams = {"max_new_tokens": 6, "num_beams": 3}
    together = answer_together(model, processor, list(zip(QUESTIONS, snapshots)), beams)
    for answer, question, snapshot in zip(together, QUESTIONS, snapshots):
        assert answer.text == generate_answer(model, processor, question, snapshot, beams, 0.0).text
        assert answer.time_to_first_token is None


def test_a_bad_row_fails_alone(model, processor, snapshots):
    empty = StreamSnapshot(model.new_memory(1), stream_time=None)
    requests = [("what?", snapshots[0]), ("what?", empty), ("   ", snapshots[1]), ("colour of it?", snapshots[3])]
    results = answer_together(model, processor, requests, GREEDY)
    assert isinstance(results[1], NoFramesError)
    assert isinstance(results[2], ValueError) and "question is empty" in str(results[2])
    good = answer_together(model, processor, [requests[0], requests[3]], GREEDY)
    assert [results[0].text, results[3].text] == [a.text for a in good]
    assert all(isinstance(r, NoFramesError) for r in answer_together(model, processor, [("a?", empty)], GREEDY))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"do_sample": True}, "do_sample=True cannot be batched"),
        ({"num_return_sequences": 2, "num_beams": 2}, "num_return_sequences must be 1"),
        ({"streamer": object()}, "streamer cannot be passed"),
        ({"video_memory": None}, "video_memory cannot be passed"),
        ({"prompt_lookup_num_tokens": 3}, "assisted decoding"),
    ],
)
def test_kwargs_that_would_change_answers_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_batchable(kwargs)


def test_greedy_whatever_the_model_config_says():
    assert check_batchable({"max_new_tokens": 3}) == {"max_new_tokens": 3, "do_sample": False}


# -- FlashVStreamMemory.stack ------------------------------------------------------------------------------------


def test_stack_holds_each_stream_and_reads_out_as_they_do(model, snapshots):
    a, b = snapshots[1].memory, snapshots[2].memory
    before = [a.state, b.state]
    stacked = FlashVStreamMemory.stack([a, b])
    assert stacked.batch_size == 2 and stacked.frames_seen == 9
    assert [a.state, b.state] == before  # inputs untouched (their immutable states are the same objects)
    torch.testing.assert_close(model.read_memory(stacked), torch.cat([model.read_memory(a), model.read_memory(b)]))
    second = stacked.snapshot()
    second.batch_select_indices([1])
    assert_same_memory(second, b)


def test_stack_refuses_memories_that_differ(model, snapshots, config):
    with pytest.raises(ValueError, match=r"cannot stack memory 1 with memory 0 .*frames_seen: 9 != 2"):
        FlashVStreamMemory.stack([snapshots[0].memory, snapshots[1].memory])
    half = snapshots[1].memory.snapshot().to(dtype=torch.float64)
    with pytest.raises(ValueError, match=r"dtype: torch.float64 != torch.float32"):
        FlashVStreamMemory.stack([snapshots[2].memory, half])
    other = FlashVStreamMemory.from_config(config.__class__(**{**config.to_dict(), "temporal_length": 3}))
    with pytest.raises(ValueError, match="temporal_length"):
        FlashVStreamMemory.stack([model.new_memory(1), other])
    with pytest.raises(ValueError, match="non-empty list"):
        FlashVStreamMemory.stack([])


# -- AnswerBatcher --------------------------------------------------------------------------------------------------


def submit_together(batcher, requests, **kwargs) -> list:
    """Submit from one thread per request, all released at once; the futures in request order."""
    futures = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def submit(index, question, snapshot):
        barrier.wait()
        futures[index] = batcher.submit(question, snapshot, **kwargs)

    threads = [threading.Thread(target=submit, args=(i, *r)) for i, r in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return futures


def test_the_batcher_answers_concurrent_questions_in_one_call(model, processor, snapshots, monkeypatch):
    requests = list(zip(QUESTIONS, snapshots))
    expected = [a.text for a in answer_together(model, processor, requests, GREEDY)]
    counter = CountingGenerate(model, monkeypatch)
    with AnswerBatcher(model, processor, window_s=0.5, max_batch_size=8) as batcher:
        futures = submit_together(batcher, requests, **GREEDY)
        answers = [f.result(timeout=60) for f in futures]
    assert counter.calls == 1 and counter.batch_sizes == [len(requests)]
    assert [a.text for a in answers] == expected
    assert all(a.latency >= a.time_to_first_token > 0 for a in answers)


def test_the_batcher_splits_by_kwargs_and_size_and_fails_only_bad_rows(model, processor, snapshots, monkeypatch):
    counter = CountingGenerate(model, monkeypatch)
    empty = StreamSnapshot(model.new_memory(1), stream_time=None)
    with AnswerBatcher(model, processor, window_s=0.5, max_batch_size=2, generation_kwargs=GREEDY) as batcher:
        short = [batcher.submit(q, s, max_new_tokens=2) for q, s in zip(QUESTIONS[:3], snapshots)]
        bad = batcher.submit("what?", empty)
        fine = batcher.submit("what?", snapshots[3])
        with pytest.raises(ValueError, match="do_sample=True"):
            batcher.submit("what?", snapshots[3], do_sample=True)
    # the 3 with max_new_tokens=2 in batches of 2 and 1; the empty snapshot's row never reaches generate()
    assert sorted(counter.batch_sizes) == [1, 1, 2]
    assert all(f.result().new_tokens <= 2 for f in short)
    with pytest.raises(NoFramesError):
        bad.result()
    assert fine.result().text == answer_together(model, processor, [("what?", snapshots[3])], GREEDY)[0].text
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("what?", snapshots[3])


def test_a_failing_batch_fails_its_own_futures_only(model, processor, snapshots, monkeypatch):
    original = model.generate

    def generate(*args, **kwargs):
        if kwargs.get("max_new_tokens") == 1:
            raise RuntimeError("device lost")
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", generate)
    with AnswerBatcher(model, processor, window_s=0.3) as batcher:
        doomed = [batcher.submit("what?", s, max_new_tokens=1) for s in snapshots[:2]]
        kept = batcher.submit("what?", snapshots[2], max_new_tokens=2)
        for future in doomed:
            with pytest.raises(RuntimeError, match="device lost"):
                future.result(timeout=60)
        assert kept.result(timeout=60).new_tokens == 2
        again = batcher.submit("what?", snapshots[2], max_new_tokens=2)  # the thread lives on
        assert again.result(timeout=60).text == kept.result().text


def test_a_broken_batcher_thread_fails_the_waiting_futures_and_closes(model, processor, snapshots, caplog):
    batcher = AnswerBatcher(model, processor, window_s=0.05)

    def broken(batch):
        raise KeyError("bug")

    batcher._answer = broken
    future = batcher.submit("what?", snapshots[0], max_new_tokens=2)
    with pytest.raises(RuntimeError, match="the AnswerBatcher stopped: KeyError"):
        future.result(timeout=60)
    batcher._thread.join(timeout=60)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("what?", snapshots[0])
    assert "the answer batcher stopped" in caplog.text


def test_close_can_cancel_what_is_pending(model, processor, snapshots):
    batcher = AnswerBatcher(model, processor, window_s=30.0, max_batch_size=8)
    future = batcher.submit("what?", snapshots[0], max_new_tokens=2)
    started = time.perf_counter()
    batcher.close(cancel_pending=True)
    assert future.cancelled() and time.perf_counter() - started < 10
    assert not batcher._thread.is_alive()


@pytest.mark.parametrize(("window_s", "max_batch_size"), [(-1.0, 2), (0.02, 0)])
def test_batcher_settings_are_checked(model, processor, window_s, max_batch_size):
    with pytest.raises(ValueError, match="window_s|max_batch_size"):
        AnswerBatcher(model, processor, window_s=window_s, max_batch_size=max_batch_size)


# -- the shipped demo model ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    from flash_vstream_hf.synthetic.checkpoint import demo_model

    return demo_model()


def test_demo_model_batch_answers_as_one_at_a_time(demo):
    from flash_vstream_hf.synthetic import SyntheticStream
    from flash_vstream_hf.synthetic.batches import pixel_values

    model, processor = demo
    views = []
    for seed, count in [(0, 3), (1, 20), (2, 60)]:
        memory = model.update_memory(pixel_values(SyntheticStream(seed).frames(0, count))[None])
        views.append(StreamSnapshot(memory, stream_time=float(count)))
    questions = ["what colour is the shape now", "how many shapes are there now", "what colour is the shape now"]
    requests = list(zip(questions, views))
    together = answer_together(model, processor, requests, {"max_new_tokens": 4})
    alone = [generate_answer(model, processor, q, s, {"max_new_tokens": 4}, 0.0) for q, s in requests]
    assert [a.text for a in together] == [a.text for a in alone]
    assert len({s.memory.get_seq_length() for s in views}) >= 2


def test_benchmark_runs_and_batches_agree(demo, capsys):
    from flash_vstream_hf.benchmarks.batched_answers import build_requests, main, measure

    model, processor = demo
    rows = measure(model, processor, build_requests(model, 3), [1, 3], rounds=1, new_tokens=3)
    assert [r["batch_size"] for r in rows] == [1, 3] and all(r["same_answers"] for r in rows)
    main(["--streams", "2", "--rounds", "1", "--batch-sizes", "1,2", "--new-tokens", "2", "--threads", "1"])
    assert "answers/s" in capsys.readouterr().out
