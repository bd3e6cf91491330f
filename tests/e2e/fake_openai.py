"""A small foreign OpenAI-compatible API on loopback, for guard proxy's end-to-end test.

It answers every question with a canned answer chosen by the request's ``model`` (``truthful``
or ``liar``), streamed word by word or not, and remembers the last request's body and
``Authorization`` header so the test can check what guard proxy forwarded. It exposes no hidden
states and knows nothing of vLLM's extensions.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

CHAT_ANSWERS = {"truthful": "The capital of France is Paris.", "liar": "The capital of France is Berlin."}
COMPLETION_ANSWERS = {"truthful": " Paris.", "liar": " Berlin."}


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [parts[0]] + [" " + p for p in parts[1:]]


class FakeOpenAI:
    """The fake API running in a thread; ``url`` is its base URL (``.../v1``)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []  #: {"path", "body", "authorization"} per request
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI API did not start in 30 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": m, "object": "model"} for m in CHAT_ANSWERS]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            return await self._answer(request, chat=True)

        @app.post("/v1/completions")
        async def completions(request: Request) -> Any:
            return await self._answer(request, chat=False)

        return app

    async def _answer(self, request: Request, chat: bool) -> Any:
        body = await request.json()
        self.seen.append({"path": request.url.path, "body": body,
                          "authorization": request.headers.get("authorization")})
        answers = CHAT_ANSWERS if chat else COMPLETION_ANSWERS
        if body.get("model") not in answers:
            return JSONResponse({"error": {"message": f"The model `{body.get('model')}` does not exist",
                                           "type": "invalid_request_error", "param": "model",
                                           "code": "model_not_found"}}, 404)
        text = answers[body["model"]]
        if body.get("stream"):
            return StreamingResponse(self._chunks(body["model"], text, chat), media_type="text/event-stream")
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                      "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        return {"id": "fake-1", "object": "chat.completion" if chat else "text_completion", "created": 1,
                "model": body["model"], "choices": [choice],
                "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}}

    @staticmethod
    def _chunks(model: str, text: str, chat: bool) -> Iterator[str]:
        head = {"id": "fake-2", "object": "chat.completion.chunk" if chat else "text_completion", "created": 1,
                "model": model}
        words = _words(text)
        for i, word in enumerate(words):
            finish = "stop" if i == len(words) - 1 else None
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                choice["delta"] = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            else:
                choice["text"] = word
            yield f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"
        yield "data: [DONE]\n\n"
