"""The page: a player, the source pickers, a status line, and a chat whose answers stream in.

Built with Gradio because it is what a Hugging Face Space runs natively (`sdk: gradio`), so `serve` and the
exported Space are the same code; it gives per-tab session ids, streamed (generator) outputs, a webcam that
streams frames to the server, uploads, a timer for the status line, and a tab-closed (`unload`) event, without
writing any JavaScript. (A FastAPI app with hand-written JS would be smaller to install but would re-implement
all of that; Streamlit re-runs the whole script per interaction, which fits a long-lived background stream badly.)

Each handler finds its tab's `Viewer` by `request.session_hash`; every `UserError` becomes the message line, so
a bad input never raises into Gradio (which would show a generic "Error" toast) and never affects another tab.
"""

from __future__ import annotations

import html
import logging

import gradio as gr

from .registry import SessionRegistry
from .viewer import UserError

logger = logging.getLogger(__name__)

CSS = "#status textarea {font-family: monospace;} #message {min-height: 1.5em;}"


def build_blocks(
    registry: SessionRegistry,
    *,
    stream_names: list[str],
    title: str = "Flash-VStream",
    model_note: str = "",
    example_questions: list[str] | None = None,
    max_new_tokens: int = 64,
    concurrency: int | None = None,
) -> gr.Blocks:
    """The Gradio app for `registry`'s viewers. `concurrency` bounds how many questions are answered at once
    (default: one per allowed session, so one tab's long answer never queues another tab's question)."""
    concurrency = concurrency or registry.max_sessions

    def viewer(request: gr.Request | None):
        return registry.get(getattr(request, "session_hash", None))

    def play_builtin(name: str, request: gr.Request):
        try:
            video = viewer(request).play_builtin(name)
        except UserError as error:
            return None, _error(error), ""
        return video, f"Playing the built-in stream {name}. Ask a question at any moment.", ""

    def play_upload(path: str | None, request: gr.Request):
        try:
            video = viewer(request).play_file(path, name=_file_name(path))
        except UserError as error:
            return None, _error(error), ""
        return video, f"Playing {_file_name(path)}. Ask a question at any moment.", ""

    def open_url(url: str, request: gr.Request):
        try:
            viewer(request).play_url(url)
        except UserError as error:
            return None, _error(error), ""
        return None, f"Reading {url}. Ask a question at any moment.", _url_preview(url)

    def webcam_frame(image, request: gr.Request):
        try:
            viewer(request).push_webcam(image)
        except UserError as error:
            return _error(error)
        return gr.skip()  # no update: the page sends several frames a second

    def stop(request: gr.Request):
        try:
            viewer(request).stop()
        except UserError as error:
            return _error(error)
        return "Stopped. The memory stays: questions are answered from what was seen."

    def ask(question: str, history: list | None, limit: float | None, request: gr.Request):
        history = list(history or [])
        question = (question or "").strip()
        if not question:
            yield history, gr.skip(), _error(UserError("type a question first"))
            return
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": "…"}]
        try:
            answers = viewer(request).ask(question, max_new_tokens=int(limit or max_new_tokens))
            for text in answers:
                history[-1] = {"role": "assistant", "content": text}
                yield history, "", ""
        except UserError as error:
            history[-1] = {"role": "assistant", "content": f"⚠️ {error}"}
            yield history, "", _error(error)

    def status(request: gr.Request):
        try:
            return viewer(request).status_line()
        except UserError as error:
            return f"⚠️ {error}"

    def unload(request: gr.Request):
        registry.close(getattr(request, "session_hash", None))

    with gr.Blocks(title=title, analytics_enabled=False) as blocks:
        gr.Markdown(f"# {html.escape(title)}\n{model_note}")
        with gr.Row():
            with gr.Column(scale=3):
                player = gr.Video(label="Stream", autoplay=True, interactive=False, elem_id="player", height=320)
                preview = gr.HTML(elem_id="url-preview")
                with gr.Tabs():
                    with gr.Tab("Built-in stream", id="tab-builtin"):
                        builtin = gr.Dropdown(
                            stream_names, value=stream_names[0], label="Generated stream", elem_id="builtin-choice"
                        )
                        play_button = gr.Button("Play", variant="primary", elem_id="play-builtin")
                    with gr.Tab("Upload a video", id="tab-upload"):
                        upload = gr.File(label="Video file", file_types=["video"], type="filepath", elem_id="upload")
                    with gr.Tab("Webcam", id="tab-webcam"):
                        webcam = gr.Image(
                            label="Webcam", sources=["webcam"], streaming=True, type="numpy", elem_id="webcam"
                        )
                    with gr.Tab("Stream URL", id="tab-url"):
                        url = gr.Textbox(label="URL", placeholder="https://.../video.mp4 or https://.../live.m3u8",
                                         elem_id="url")  # fmt: skip
                        url_button = gr.Button("Open", elem_id="open-url")
                stop_button = gr.Button("Stop the stream", size="sm", elem_id="stop")
            with gr.Column(scale=2):
                status_box = gr.Textbox(label="Status", interactive=False, elem_id="status", lines=2)
                message = gr.Markdown(elem_id="message")
                chat = gr.Chatbot(label="Questions and answers", elem_id="chat", height=340)
                question = gr.Textbox(label="Question", placeholder="Type a question and press Enter, at any moment",
                                      elem_id="question")  # fmt: skip
                with gr.Row():
                    ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
                    limit = gr.Slider(1, 512, value=max_new_tokens, step=1, label="max new tokens", elem_id="limit")
                if example_questions:
                    gr.Examples([[q] for q in example_questions], inputs=[question], label="Try")

        sources = {"concurrency_limit": None, "show_progress": "minimal"}
        play_button.click(play_builtin, [builtin], [player, message, preview], **sources)
        upload.upload(play_upload, [upload], [player, message, preview], **sources)
        url_button.click(open_url, [url], [player, message, preview], **sources)
        url.submit(open_url, [url], [player, message, preview], **sources)
        webcam.stream(webcam_frame, [webcam], [message], stream_every=0.5, concurrency_limit=None,
                      show_progress="hidden")  # fmt: skip
        stop_button.click(stop, None, [message], concurrency_limit=None)
        asking = {"concurrency_limit": concurrency, "concurrency_id": "ask", "show_progress": "hidden"}
        ask_button.click(ask, [question, chat, limit], [chat, question, message], **asking)
        question.submit(ask, [question, chat, limit], [chat, question, message], **asking)
        gr.Timer(1.0).tick(status, None, [status_box], concurrency_limit=None, show_progress="hidden")
        blocks.load(status, None, [status_box], concurrency_limit=None, show_progress="hidden")
        blocks.unload(unload)
    return blocks


def _error(error: BaseException) -> str:
    return f"⚠️ **{html.escape(str(error))}**"


def _file_name(path: str | None) -> str:
    from pathlib import Path

    return Path(path).name if path else "the upload"


def _url_preview(url: str) -> str:
    """A player for URLs the browser itself can open (http/https); other schemes are read by the server only."""
    if url.lower().startswith(("http://", "https://")):
        return f'<video src="{html.escape(url, quote=True)}" autoplay muted controls style="max-width:100%"></video>'
    return "<p>The browser cannot show this kind of stream; the status line shows what the model has read.</p>"
