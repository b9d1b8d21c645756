"""`ApiError`: what a host or the registry refuses, with the HTTP status and the request field it concerns.

Raised inside Ray actors, it reaches the gateway through `ray.get` as itself (Ray's task error subclasses it),
and the gateway turns it into `{"error": {"field": ..., "message": ...}}` with its status.
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, field: str | None, message: str, retry_after: float | None = None):
        super().__init__(status, field, message, retry_after)
        self.status, self.field, self.message, self.retry_after = status, field, message, retry_after

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict:
        return {"error": {"field": self.field, "message": self.message, "status": self.status}}


def unknown_stream(stream_id: str) -> ApiError:
    return ApiError(404, "stream_id", f"no stream {stream_id!r}")


def recovering(stream_id: str, retry_after: float = 2.0) -> ApiError:
    return ApiError(503, "stream_id", f"stream {stream_id!r} is being recovered on a live host", retry_after)
