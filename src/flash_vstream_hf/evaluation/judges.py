"""Judges for open-ended answers: any OpenAI-compatible chat endpoint, or a local transformers chat model, behind
one `complete(messages) -> str`; `judge_answer` adds the protocol, the cache and the retries.

A judge that times out, cannot be reached, answers 429/5xx or replies with garbage is retried (`retries` times,
with a growing pause); an item that still has no verdict is reported and the run goes on. Only valid verdicts
are cached, so the next run asks again for the rest.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from . import judge_prompt
from .judge_cache import JudgeCache, cache_key

URL_ENV = ("FLASH_VSTREAM_JUDGE_URL", "OPENAI_BASE_URL")
MODEL_ENV = ("FLASH_VSTREAM_JUDGE_MODEL",)
KEY_ENV = ("FLASH_VSTREAM_JUDGE_KEY", "OPENAI_API_KEY")


class JudgeError(RuntimeError):
    """No verdict for an item after the retries; the message says why."""


class TransientJudgeError(RuntimeError):
    """A failure worth retrying: a timeout, a dropped connection, 429 or 5xx."""


def from_environment(names: tuple[str, ...]) -> str | None:
    return next((os.environ[name] for name in names if os.environ.get(name)), None)


class OpenAICompatibleJudge:
    """`POST {base_url}/chat/completions` (`base_url` such as `https://api.openai.com/v1` or a local vLLM / llama.cpp
    server's `http://127.0.0.1:8000/v1`; a URL already ending in `/chat/completions` is used as is)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0):
        url = base_url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else f"{url}/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout

    @property
    def identity(self) -> dict:
        return {"kind": "openai-compatible", "model": self.model}

    def describe(self) -> str:
        return f"{self.model} at {self.url}"

    def complete(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": judge_prompt.TEMPERATURE})
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body.encode("utf-8"), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read()[:200].decode("utf-8", "replace")
            if error.code == 429 or error.code >= 500:
                raise TransientJudgeError(f"HTTP {error.code} from {self.url}: {detail}") from error
            raise JudgeError(f"HTTP {error.code} from {self.url}: {detail}") from error
        except (TimeoutError, socket.timeout) as error:
            raise TransientJudgeError(f"no reply from {self.url} within {self.timeout} s") from error
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            raise TransientJudgeError(f"cannot reach {self.url}: {getattr(error, 'reason', error)}") from error
        try:
            return json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise judge_prompt.GarbageVerdict(f"not a chat completion: {payload[:200]!r}") from error


class TransformersJudge:
    """A local chat model (`AutoModelForCausalLM` with a chat template), decoding greedily: the original's
    temperature of 0.002 is greedy decoding in all but name."""

    def __init__(self, model, tokenizer, name: str, max_new_tokens: int = 48):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(cls, name: str, device: str | None = None, **kwargs) -> TransformersJudge:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(name, dtype="auto", device_map=device, **kwargs)
        return cls(model, AutoTokenizer.from_pretrained(name), name)

    @property
    def identity(self) -> dict:
        return {"kind": "transformers", "model": self.name}

    def describe(self) -> str:
        return f"{self.name} (local transformers model)"

    def complete(self, messages: list[dict]) -> str:
        import torch

        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.model.device)
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@dataclass
class JudgeOutcome:
    """A verdict with where it came from (`cached`: read back, nothing sent), and the cache key."""

    verdict: judge_prompt.Verdict
    cached: bool
    key: str


def judge_answer(
    judge, cache: JudgeCache, question: str, answer: str, prediction: str, retries: int = 2, pause: float = 1.0
) -> JudgeOutcome:
    """The verdict on one answer: from the cache, else from `judge` (retried on transient failures and garbage);
    raises `JudgeError` when there is none."""
    request = judge_prompt.messages(question, answer, prediction)
    key = cache_key(judge.identity, request, judge_prompt.TEMPERATURE, judge_prompt.PROMPT_VERSION)
    stored = cache.get(key)
    if stored is not None:
        try:
            return JudgeOutcome(judge_prompt.read_verdict(stored["reply"]), True, key)
        except judge_prompt.GarbageVerdict:
            pass  # never stored on purpose; a damaged entry is asked again
    failures = []
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(pause * attempt)
        try:
            reply = judge.complete(request)
            verdict = judge_prompt.read_verdict(reply)
        except (TransientJudgeError, judge_prompt.GarbageVerdict) as error:
            failures.append(str(error))
            continue
        cache.put(key, {"reply": reply, "identity": judge.identity, "judge": judge.describe(), "messages": request})
        return JudgeOutcome(verdict, False, key)
    raise JudgeError(f"no valid verdict after {retries + 1} tries; last: {failures[-1]}")
