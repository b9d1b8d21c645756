"""Judges of `flash-vstream eval`: an OpenAI-compatible endpoint (served on 127.0.0.1 by the test) and a local
transformers model; every answer cached on disk; timeouts and garbage retried, then reported."""

import pytest

from flash_vstream_hf.evaluation.judge_cache import JudgeCache
from flash_vstream_hf.evaluation.judges import JudgeError, OpenAICompatibleJudge, TransformersJudge, judge_answer
from flash_vstream_hf.evaluation.judging import MAX_CONSECUTIVE_FAILURES, judge_records

from .eval_helpers import JudgeServer


def test_verdicts_are_cached_and_a_judge_change_is_a_cache_miss(tmp_path):
    cache = JudgeCache(tmp_path / "cache")
    server = JudgeServer()
    with server as url:
        judge = OpenAICompatibleJudge(url, "judge-a", api_key="secret")
        first = judge_answer(judge, cache, "What is held?", "a cup", "A cup")
        again = judge_answer(judge, cache, "What is held?", "a cup", "A cup")
        wrong = judge_answer(judge, cache, "What is held?", "a cup", "a hat")
        assert (first.verdict.correct, first.verdict.score, first.cached) == (True, 5, False)
        assert again.cached and again.verdict == first.verdict and again.key == first.key
        assert (wrong.verdict.correct, wrong.verdict.score) == (False, 1)
        assert server.requests == 2  # the repeat cost nothing
        other = judge_answer(OpenAICompatibleJudge(url, "judge-b"), cache, "What is held?", "a cup", "A cup")
        assert not other.cached and other.key != first.key and server.models == ["judge-a", "judge-a", "judge-b"]
    # the endpoint may move: the same model elsewhere is the same judge
    moved = judge_answer(OpenAICompatibleJudge("http://127.0.0.1:9/v1", "judge-a"), cache, "What is held?", "a cup",
                         "A cup")  # fmt: skip
    assert moved.cached


def test_garbage_is_retried_then_reported(tmp_path):
    cache = JudgeCache(tmp_path)
    server = JudgeServer("garbage-once")
    with server as url:
        outcome = judge_answer(OpenAICompatibleJudge(url, "m"), cache, "Q?", "yes", "yes", retries=1, pause=0)
        assert outcome.verdict.correct and server.requests == 2
    server = JudgeServer("garbage")
    with server as url:
        with pytest.raises(JudgeError, match="no valid verdict after 3 tries"):
            judge_answer(OpenAICompatibleJudge(url, "m"), cache, "Q?", "no", "no", retries=2, pause=0)
        assert server.requests == 3
    assert not list(tmp_path.rglob("*.json"))[1:]  # only the one valid verdict was stored


def test_a_judge_that_times_out_or_is_down(tmp_path):
    cache = JudgeCache(tmp_path)
    with JudgeServer("slow", delay=1.5) as url:
        with pytest.raises(JudgeError, match="no reply .* within 0.2 s"):
            judge_answer(OpenAICompatibleJudge(url, "m", timeout=0.2), cache, "Q?", "a", "a", retries=1, pause=0)
    with pytest.raises(JudgeError, match="cannot reach"):
        judge_answer(OpenAICompatibleJudge("http://127.0.0.1:9/v1", "m", timeout=1), cache, "Q?", "a", "a", 0, 0)


def test_the_judge_pass_stops_asking_a_dead_judge(tmp_path):
    records = [{"id": f"q{i}", "kind": "open", "question": "Q?", "reference": "a", "prediction": str(i)}
               for i in range(MAX_CONSECUTIVE_FAILURES + 3)]  # fmt: skip
    records.append({"id": "mc", "kind": "choice", "question": "Q?", "reference": "A", "prediction": "A"})
    judge = OpenAICompatibleJudge("http://127.0.0.1:9/v1", "m", timeout=1)
    verdicts, problems = judge_records(records, judge, JudgeCache(tmp_path), retries=0, pause=0, progress=False)
    assert verdicts == {} and [p.id for p in problems] == [r["id"] for r in records[:-1]]
    assert all(p.stage == "judge" for p in problems) and "previous items" in problems[-1].message


def test_a_local_transformers_judge(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from flash_vstream_hf.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048)  # fmt: skip
    judge = TransformersJudge(LlamaForCausalLM(config), tokenizer, "tiny-judge", max_new_tokens=4)
    assert judge.identity == {"kind": "transformers", "model": "tiny-judge"}
    with torch.inference_mode():
        reply = judge.complete([{"role": "user", "content": "Is it? {'pred': ..."}])
    assert isinstance(reply, str)
    with pytest.raises(JudgeError):  # a random model's reply is no verdict: reported, never cached
        judge_answer(judge, JudgeCache(tmp_path), "Q?", "a", "b", retries=0, pause=0)
    assert not list(tmp_path.rglob("*.json"))


def test_the_judge_comes_from_flags_or_the_environment(monkeypatch):
    import argparse

    from flash_vstream_hf.commands.eval import make_judge

    def args(**values):
        defaults = {"judge_local": None, "judge_url": None, "judge_model": None, "judge_key": None,
                    "judge_timeout": 5.0, "device": None}  # fmt: skip
        return argparse.Namespace(**{**defaults, **values})

    for name in ("FLASH_VSTREAM_JUDGE_URL", "OPENAI_BASE_URL", "FLASH_VSTREAM_JUDGE_MODEL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert make_judge(args()) is None
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("FLASH_VSTREAM_JUDGE_KEY", "k")
    judge = make_judge(args())
    assert (judge.url, judge.model, judge.api_key) == ("http://127.0.0.1:1/v1/chat/completions", "gpt-3.5-turbo", "k")
    judge = make_judge(args(judge_url="http://127.0.0.1:2/v1/chat/completions", judge_model="m", judge_key="x"))
    assert (judge.url, judge.model, judge.api_key, judge.timeout) == (
        "http://127.0.0.1:2/v1/chat/completions",
        "m",
        "x",
        5.0,
    )
