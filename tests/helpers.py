"""Helpers shared by test modules (fixtures live in conftest.py)."""

import base64
import functools
import http.server
import io
import threading

import numpy as np
import torch
from PIL import Image

from flash_vstream_hf import FlashVStreamMemory


def assert_same_memory(a: FlashVStreamMemory, b: FlashVStreamMemory, exact: bool = True) -> None:
    """Same frames seen and the same state tensors: bit for bit, or with `exact=False` within float tolerance
    (for memories whose frames went through the vision tower in differently sized batches)."""
    assert a.frames_seen == b.frames_seen
    expected = b.state.tensors()
    for name, tensor in a.state.tensors().items():
        if exact:
            assert torch.equal(tensor, expected[name]), name
        else:
            torch.testing.assert_close(tensor, expected[name], msg=name)


def prompt_inputs(processor, num_video_tokens: int, question: str = "What is moving?") -> dict:
    """`input_ids` and `attention_mask` of a one-question chat about a memory of `num_video_tokens` tokens."""
    chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True)
    return processor(text=text, num_video_tokens=num_video_tokens, return_tensors="pt")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(frame: np.ndarray) -> str:
    """`frame` `[H, W, 3]` uint8 as a base64 PNG, as endpoint payloads carry images."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return b64(buffer.getvalue())


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, answers the paths in `server.redirects` with a 302 to their target, and records every
    request line in `server.requests` (the refusal tests check that none arrived)."""

    def do_GET(self):
        self.server.requests.append(self.requestline)
        target = self.server.redirects.get(self.path)
        if target is None:
            return super().do_GET()
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self.server.requests.append(self.requestline)
        return super().do_HEAD()

    def log_message(self, *args):
        pass


class http_server:
    """Serve `folder` on a loopback address (`host`, any of 127.0.0.0/8) for the duration of a `with` block;
    yields the base URL. `requests` lists the request lines received; `redirect(path, target)` makes `path`
    answer with a redirect."""

    def __init__(self, folder, host: str = "127.0.0.1"):
        self.server = http.server.ThreadingHTTPServer(
            (host, 0), functools.partial(_RecordingHandler, directory=str(folder))
        )
        self.server.requests, self.server.redirects = [], {}
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"

    @property
    def requests(self) -> list[str]:
        return self.server.requests

    def redirect(self, path: str, target: str) -> None:
        self.server.redirects[path] = target

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.url

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()
