"""The HTTP face of a fake replica: vLLM's OpenAI-compatible routes (`stream: true` as server-sent
events), `/metrics` in vLLM's names, vLLM's `/load` and SGLang's `/get_load`, and `/health`."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from examples.fake_replica.engine import Engine, Job, ReplicaFailure, ReplicaProfile, count_tokens
from examples.fake_replica.metrics import CONTENT_TYPE, VllmMetrics

DEFAULT_MAX_TOKENS = 64
MAX_TOKENS = 4096
CHAT, COMPLETION = "/v1/chat/completions", "/v1/completions"


class FakeReplica:
    """One replica server on 127.0.0.1 (port 0 = any free port); start() returns at once."""

    def __init__(self, profile: ReplicaProfile, port: int = 0, seed: int | None = None,
                 host: str = "127.0.0.1") -> None:
        self.profile = profile
        self.engine = Engine(profile, seed)
        self.metrics = VllmMetrics(self.engine)
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.server = ThreadingHTTPServer((host, port), _handler_for(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name=profile.name,
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def in_flight(self) -> int:
        return self.engine.in_flight

    @property
    def served(self) -> int:
        return self.engine.served

    def start(self) -> FakeReplica:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port; safe to call twice, or before start()."""
        if self._thread.is_alive():
            self.server.shutdown()  # waits for a running serve_forever only: it would hang otherwise
        self.server.server_close()
        with self._lock:  # kept-alive connections too: a stopped replica answers nothing
            open_connections, self._connections = list(self._connections), set()
        for connection in open_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def parse(self, path: str, request: dict[str, Any]) -> Job:
        """The engine's job for an OpenAI request body; ValueError for a malformed one."""
        if path == CHAT:
            messages = request.get("messages")
            if not isinstance(messages, list):
                raise ValueError("messages must be a list")
            # The role goes into the prompt as a chat template puts it there: it is part of the prefix.
            prompt = "\n".join(f"{m.get('role', 'user')}: {_text(m.get('content'))}"
                               for m in messages if isinstance(m, dict))
        else:
            raw = request.get("prompt")
            prompt = " ".join(map(str, raw)) if isinstance(raw, list) else str(raw or "")
        limit = request.get("max_completion_tokens") or request.get("max_tokens") or DEFAULT_MAX_TOKENS
        return Job(prompt, count_tokens(prompt), max(1, min(int(limit), MAX_TOKENS)))

    def run(self, job: Job) -> Iterator[int]:
        """The engine's tokens for `job`, recording TTFT and end-to-end latency when it ends."""
        finished = None
        try:
            yield from self.engine.generate(job)
            finished = "length"
        finally:
            ttft = None if job.first_token_at is None else job.first_token_at - job.arrived
            self.metrics.finished(ttft, time.monotonic() - job.arrived, finished)

    def load(self) -> dict[str, Any]:
        return {"server_load": self.engine.in_flight}  # vLLM's /load (--enable-server-load-tracking)

    def sglang_load(self) -> list[dict[str, Any]]:
        now = self.engine.snapshot()  # SGLang's /get_load: one row per data-parallel rank
        return [{"dp_rank": 0, "num_reqs": now["running"] + now["waiting"],
                 "num_waiting_reqs": now["waiting"], "num_tokens": now["tokens"]}]


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI's content parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _token(index: int) -> str:
    # Varied text: LiteLLM fails a stream of more than 100 identical chunks as a model repeating itself.
    return f"tok{index % 7}" if index == 0 else f" tok{index % 7}"


class _Answer:
    """OpenAI's response shapes for one request, whole or as stream chunks."""

    def __init__(self, replica: FakeReplica, path: str, request: dict[str, Any], job: Job) -> None:
        self.chat = path == CHAT
        self.job = job
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.model = request.get("model") or replica.profile.served_model
        self.created = int(time.time())
        self.fingerprint = replica.profile.name
        options = request.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    def usage(self) -> dict[str, Any]:
        job = self.job
        return {"prompt_tokens": job.prompt_tokens, "completion_tokens": job.generated,
                "total_tokens": job.prompt_tokens + job.generated,
                "prompt_tokens_details": {"cached_tokens": job.cached_tokens}}

    def whole(self) -> dict[str, Any]:
        text = "".join(_token(i) for i in range(self.job.generated))
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": "length"}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [choice], "usage": self.usage(),
                "system_fingerprint": self.fingerprint}

    def chunk(self, text: str | None, finish_reason: str | None = None, first: bool = False
              ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text or ""} if first else {}
            if text and not first:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [choice],
                "system_fingerprint": self.fingerprint}

    def usage_chunk(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [], "usage": self.usage()}


def _handler_for(replica: FakeReplica) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with replica._lock:
                replica._connections.add(self.connection)

        def finish(self) -> None:
            with replica._lock:
                replica._connections.discard(self.connection)
            super().finish()

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            # Read the body whatever the path: left unread, it would be taken for the next request
            # on a kept-alive connection (vllm-router POSTs /v1/chat/completions/render first).
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if path not in (CHAT, COMPLETION):
                return self._json(404, {"error": {"message": f"no route {self.path}"}})
            try:
                request = json.loads(raw)
                if not isinstance(request, dict):
                    raise ValueError("body must be a JSON object")
                job = replica.parse(path, request)
            except (ValueError, TypeError) as exc:
                error = {"message": f"bad request: {exc}", "type": "BadRequestError"}
                return self._json(400, {"error": error})
            answer = _Answer(replica, path, request, job)
            tokens = replica.run(job)
            try:
                first = next(tokens)  # the prefill: nothing is sent before it is done
            except ReplicaFailure as exc:
                return self._json(500, {"error": {"message": str(exc), "type": "server_error"}})
            if request.get("stream"):
                return self._stream(answer, first, tokens)
            for _ in tokens:
                pass
            self._json(200, answer.whole())

        def _stream(self, answer: _Answer, first: int, tokens: Iterator[int]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                self._event(answer.chunk(_token(first), first=True))
                for index in tokens:
                    self._event(answer.chunk(_token(index)))
                self._event(answer.chunk(None, "length"))
                if answer.include_usage:
                    self._event(answer.usage_chunk())
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")
            except (BrokenPipeError, ConnectionResetError):
                tokens.close()  # the client hung up: free the batch slot now
                self.close_connection = True

        def _event(self, body: dict[str, Any]) -> None:
            self._chunk(b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/health":
                return self._json(200, {"status": "ok", "in_flight": replica.in_flight})
            if path == "/metrics":
                return self._send(200, replica.metrics.render(), CONTENT_TYPE)
            if path == "/load":
                return self._json(200, replica.load())
            if path == "/get_load":
                return self._json(200, replica.sglang_load())
            if path == "/v1/models":
                model = {"id": replica.profile.served_model, "object": "model", "owned_by": "vllm",
                         "created": 0, "root": replica.profile.served_model, "max_model_len": 32768}
                return self._json(200, {"object": "list", "data": [model]})
            self._json(404, {"error": {"message": f"no route {self.path}"}})

        def _json(self, status: int, body: Any) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
            pass  # one line per request would drown the demo's output

    return Handler
