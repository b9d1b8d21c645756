"""The HTTP front door: a stateless FastAPI app on Ray Serve that routes each request to the stream's host.

It keeps no stream state: it asks the registry who owns a stream, then calls that host. Everything it
receives comes from strangers: bodies are checked by `api_models`, their size is capped before they are read
(`BodyLimit`), a bearer token is required whenever one is set, and every failure is a JSON error naming the
field, with its 4xx (or 503 and `Retry-After` while a stream is being recovered).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..conversion.handler import MAX_PAYLOAD_BYTES
from .api_models import Ask, ChatCompletion, CreateStream, PushFrames
from .errors import ApiError
from .settings import NAMESPACE, REGISTRY_NAME, ClusterSettings

RETRY_AFTER = 2  # seconds a client waits before retrying a stream whose host is being replaced
PUBLIC_PATHS = ("/docs", "/openapi.json", "/healthz")  # the API's shape only; everything else needs the token


class BodyLimit:
    """ASGI middleware: a request body past `limit` bytes is refused with 413 as soon as it is, declared or not."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(self.limit)(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(ApiError(413, None, f"the request body is over {limit:,} bytes").to_dict(), 413)


def build_app(settings: ClusterSettings, cluster) -> FastAPI:
    """The API over `cluster` (a `RayCluster`: the registry and the hosts)."""
    app = FastAPI(
        title="flash-vstream cluster",
        description="Live video streams with a bounded memory, questions at any moment (OpenAI-compatible chat).",
        version="1",
    )
    app.add_middleware(BodyLimit, limit=MAX_PAYLOAD_BYTES)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if settings.token is not None and request.url.path not in PUBLIC_PATHS:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                error = ApiError(401, "authorization", "a bearer token is required (Authorization: Bearer TOKEN)")
                return JSONResponse(error.to_dict(), 401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        headers = {} if error.retry_after is None else {"Retry-After": str(max(1, round(error.retry_after)))}
        return JSONResponse(error.to_dict(), error.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        return JSONResponse(ApiError(422, field, first["msg"]).to_dict(), 422)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @app.post("/v1/streams", status_code=201)
    async def create_stream(body: CreateStream) -> dict:
        spec = body.model_dump() | {"kind": body.kind}
        return await cluster.registry_call("create", spec)

    @app.get("/v1/streams")
    async def list_streams() -> dict:
        return {"streams": await cluster.registry_call("list")}

    @app.get("/v1/streams/{stream_id}")
    async def get_stream(stream_id: str) -> dict:
        record = await cluster.registry_call("record", stream_id)
        if record["state"] != "open":
            return record
        status = await cluster.host_call(stream_id, "status")
        # state: the registry's, stream_state: ingest's; the owner as the host itself says (the registry's lags)
        return {**status, **record, "owner": status["owner"], "stream_state": status["state"]}

    @app.delete("/v1/streams/{stream_id}", status_code=204)
    async def delete_stream(stream_id: str) -> Response:
        await cluster.registry_call("delete", stream_id)
        return Response(status_code=204)

    @app.post("/v1/streams/{stream_id}/frames")
    async def push_frames(stream_id: str, body: PushFrames) -> dict:
        frames = [(frame.timestamp, _base64(frame.image, f"frames[{i}].image")) for i, frame in enumerate(body.frames)]
        return await cluster.host_call(stream_id, "push_frames", frames)

    @app.post("/v1/streams/{stream_id}/ask")
    async def ask(stream_id: str, body: Ask) -> dict:
        return await cluster.host_call(stream_id, "ask", body.question, body.max_new_tokens, body.at)

    @app.get("/v1/streams/{stream_id}/memory")
    async def memory(stream_id: str) -> Response:
        data = await cluster.host_call(stream_id, "memory_file")
        disposition = f'attachment; filename="{stream_id}.safetensors"'
        return Response(data, media_type="application/octet-stream", headers={"Content-Disposition": disposition})

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletion, request: Request):
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        arguments = (body.conversation(), body.new_tokens, None)
        if not body.stream:
            answer = await cluster.host_call(body.stream_id, "ask", *arguments)
            return _completion(completion_id, created, body, answer)
        pieces = await cluster.host_stream(body.stream_id, "ask_stream", *arguments)
        return StreamingResponse(_events(completion_id, created, body, pieces), media_type="text/event-stream")

    return app


def _base64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(422, field, f"is not valid base64 ({error})") from error


def _finish_reason(answer: dict, body: ChatCompletion) -> str:
    return "length" if body.new_tokens is not None and answer["new_tokens"] >= body.new_tokens else "stop"


def _about(answer: dict) -> dict:
    """What the answer was computed from, beside OpenAI's fields."""
    keys = ("frames_seen", "stream_time", "memory_tokens", "time_to_first_token_s", "latency_s")
    return {key: answer[key] for key in keys}


def _completion(completion_id: str, created: int, body: ChatCompletion, answer: dict) -> dict:
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer["answer"]},
                     "finish_reason": _finish_reason(answer, body)}],
        "flash_vstream": _about(answer),
    }  # fmt: skip


async def _events(completion_id: str, created: int, body: ChatCompletion, pieces):
    """Server-sent events in OpenAI's chunk format, then `[DONE]`; a failure mid-answer is an error event."""

    def chunk(delta: dict, finish_reason: str | None = None, **extra) -> str:
        document = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}  # fmt: skip
        return f"data: {json.dumps(document)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for piece in pieces:
            if isinstance(piece, dict):  # the last item: the whole answer
                yield chunk({}, _finish_reason(piece, body), flash_vstream=_about(piece))
            elif piece:
                yield chunk({"content": piece})
    except Exception as error:  # the host died mid-answer: say so in the stream, which has already begun
        failure = error if isinstance(error, ApiError) else ApiError(503, None, f"the answer failed: {error}")
        yield f"data: {json.dumps(failure.to_dict())}\n\n"
    yield "data: [DONE]\n\n"


class RayCluster:
    """The gateway's view of the cluster: calls to the registry and to the host that owns a stream, with Ray's
    failures (an actor that died or is restarting, a timeout) turned into 503 + Retry-After."""

    def __init__(self, settings: ClusterSettings, timeout: float = 120.0):
        self.settings, self.timeout = settings, timeout

    @staticmethod
    def _actor(name: str):
        import ray

        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError as error:
            raise ApiError(503, None, f"{name} is not running (being restarted?)", RETRY_AFTER) from error

    async def registry_call(self, method: str, *args):
        return await self._await(getattr(self._actor(REGISTRY_NAME), method).remote(*args))

    async def host_call(self, stream_id: str, method: str, *args):
        host = await self.registry_call("locate", stream_id)
        return await self._await(getattr(self._actor(host), method).remote(stream_id, *args))

    async def host_stream(self, stream_id: str, method: str, *args):
        """The items a host's generator method yields, as an async iterator (the first one already awaited, so
        errors such as an unknown stream are raised before the response starts)."""
        host = await self.registry_call("locate", stream_id)
        generator = getattr(self._actor(host), method).options(num_returns="streaming").remote(stream_id, *args)
        try:
            first_ref = await generator.__anext__()
        except StopAsyncIteration as error:
            raise ApiError(503, None, "the answer ended before it began") from error
        first = await self._await(first_ref)

        async def items():
            yield first
            async for ref in generator:
                yield await self._await(ref)

        return items()

    async def _await(self, ref):
        import asyncio

        import ray.exceptions as errors

        try:
            return await asyncio.wait_for(ref, self.timeout)
        except (errors.RayActorError, errors.ActorUnavailableError, asyncio.TimeoutError) as error:
            raise ApiError(503, None, f"the owner is unavailable ({type(error).__name__}); it is being replaced",
                           RETRY_AFTER) from error  # fmt: skip
