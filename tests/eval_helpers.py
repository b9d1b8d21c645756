"""Helpers of the `flash-vstream eval` tests: running the command, small benchmarks written on the spot, and an
OpenAI-compatible judge served on loopback."""

from __future__ import annotations

import argparse
import http.server
import json
import re
import threading
import time
from pathlib import Path

from PIL import Image

from flash_vstream_hf.commands import eval as eval_command
from flash_vstream_hf.tiny import synthetic_frame, write_synthetic_video


def run_eval(argv: list[str]) -> int:
    """`flash-vstream eval ARGV...` (the command is built from its module, as cli.py builds it)."""
    parser = argparse.ArgumentParser(prog="flash-vstream eval")
    eval_command.add_arguments(parser)
    args = parser.parse_args(argv)
    args.command = "eval"
    return eval_command.run(args)


def write_frame_folder(folder: Path, count: int, start: int = 0) -> Path:
    """`count` JPEG frames of the synthetic video, named so that name order is frame order."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        Image.fromarray(synthetic_frame(start + k)).save(folder / f"frame_{k:04d}.jpg", quality=95)
    return folder


def write_videos(folder: Path) -> Path:
    """`clip.mp4` (12 s at 10 fps: frames at 0..11 s when sampled at 1 fps) and `frames/` (8 frames: 0..7 s)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_synthetic_video(folder / "clip.mp4", num_frames=120, fps=10)
    write_frame_folder(folder / "frames", 8, start=3)
    return folder


def read_predictions(path: Path) -> dict[str, dict]:
    return {record["id"]: record for record in map(json.loads, path.read_text().splitlines())}


def stable(record: dict) -> dict:
    """A record without its timings (which differ between runs)."""
    return {key: value for key, value in record.items() if not key.endswith("_s")}


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that timed out closed its connection: expected in the timeout tests


class JudgeServer:
    """An OpenAI-compatible `/v1/chat/completions` on 127.0.0.1 that judges by normalised equality of the
    reference and the prediction. `mode`: "ok"; "garbage" (never a dict); "garbage-once" (garbage for the first
    request about each answer, then ok); "slow" (sleeps `delay` s before replying). `requests` counts the
    requests, `models` lists the model names asked for."""

    def __init__(self, mode: str = "ok", delay: float = 2.0):
        self.mode, self.delay = mode, delay
        self.requests, self.models, self._seen = 0, [], set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests += 1
                server.models.append(body["model"])
                content = server.reply(body["messages"])
                if content is None:
                    return
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)

    def reply(self, messages: list[dict]) -> str | None:
        user = messages[-1]["content"]
        answer = re.search(r"Correct Answer: (.*)\n", user).group(1)
        prediction = re.search(r"Predicted Answer: (.*)\n", user).group(1)
        if self.mode == "slow":
            time.sleep(self.delay)
        if self.mode == "garbage" or (self.mode == "garbage-once" and user not in self._seen):
            self._seen.add(user)
            return "Sure! The prediction looks quite good to me."
        same = answer.strip().lower() == prediction.strip().lower()
        return f"{{'pred': '{'yes' if same else 'no'}', 'score': {5 if same else 1}}}"

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()
