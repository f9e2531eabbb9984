"""Request bodies over ``max_request_bytes`` are refused with a JSON 413.

The body is read here, counted, and handed on whole: a Content-Length that
already says too much is refused before a byte is read, a chunked body as soon
as it grows past the limit. FastAPI's own ``max_body_size`` was not used: it
answers a too-long Content-Length with a bare text/plain line, overriding any
handler, and a too-long chunked body reaches the route as a generic 400.
Buffering costs nothing extra, as FastAPI reads a JSON body whole anyway.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from citylake.services.query.errors import ErrorBody


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"chunked" not in headers.get(b"transfer-encoding", b""):
            await self.app(scope, receive, send)  # no body to count
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away mid-body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            return whole.pop() if whole else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = (
            ErrorBody(
                detail=f"the request body is larger than {self.max_bytes} bytes", limit="max_request_bytes"
            )
            .model_dump_json()
            .encode()
        )
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
