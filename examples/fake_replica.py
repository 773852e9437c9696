"""Fake LLM replicas: OpenAI-compatible HTTP servers whose answer time follows the prompt and output
token counts and the replica's current concurrency, with a different speed per replica.

    time = (overhead + prompt_tokens * prefill + completion_tokens * decode)
           * (1 + contention * (in_flight - 1)) / speed

Run one alone: `python -m examples.fake_replica --port 8001 --speed 0.5`.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class ReplicaProfile:
    name: str
    speed: float = 1.0  # 2.0 answers twice as fast as 1.0
    overhead_ms: float = 5.0  # scheduling, first token
    prefill_ms_per_token: float = 0.05
    decode_ms_per_token: float = 1.0
    contention: float = 0.25  # each extra concurrent request slows every request by 25%
    failure_rate: float = 0.0  # share of requests answered with 500


def count_tokens(text: str) -> int:
    """About 4 tokens per 3 words, as for English with a BPE tokenizer."""
    return max(1, round(len(text.split()) * 4 / 3))


class FakeReplica:
    """One replica server on 127.0.0.1 (port 0 = any free port); start() returns at once."""

    def __init__(self, profile: ReplicaProfile, port: int = 0, seed: int | None = None) -> None:
        self.profile = profile
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.served = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name=profile.name,
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeReplica:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def service_time_s(self, prompt_tokens: int, completion_tokens: int, concurrency: int) -> float:
        p = self.profile
        work_ms = (p.overhead_ms + prompt_tokens * p.prefill_ms_per_token
                   + completion_tokens * p.decode_ms_per_token)
        return work_ms * (1 + p.contention * max(concurrency - 1, 0)) / p.speed / 1000

    def complete(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Serve one chat completion: sleep for the modelled time, answer OpenAI's shape."""
        messages = request.get("messages") or []
        prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        prompt_tokens = count_tokens(prompt)
        completion_tokens = max(1, min(int(request.get("max_tokens") or 64), 4096))
        with self._lock:
            self.in_flight += 1
            concurrency = self.in_flight
        try:
            time.sleep(self.service_time_s(prompt_tokens, completion_tokens, concurrency))
            failed = self.profile.failure_rate and self._rng.random() < self.profile.failure_rate
        finally:
            with self._lock:
                self.in_flight -= 1
                self.served += 1
        if failed:
            return 500, {"error": {"message": f"{self.profile.name} failed", "type": "server_error"}}
        text = " ".join(["token"] * completion_tokens)
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": request.get("model") or self.profile.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "system_fingerprint": self.profile.name,
        }


def _handler_for(replica: FakeReplica) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if not isinstance(request, dict):
                    raise ValueError("body must be a JSON object")
            except ValueError as exc:
                return self._send(400, {"error": {"message": f"bad request: {exc}"}})
            self._send(*replica.complete(request))

        def do_GET(self) -> None:
            if self.path == "/health":
                return self._send(200, {"status": "ok", "in_flight": replica.in_flight})
            self._send(200, {"object": "list", "data": [{"id": replica.profile.name, "object": "model"}]})

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
            pass  # one line per request would drown the demo's output

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--name", default="replica")
    args = parser.parse_args()
    replica = FakeReplica(ReplicaProfile(args.name, speed=args.speed), port=args.port)
    print(f"{args.name} (speed {args.speed:g}x) on {replica.url}", flush=True)
    replica.server.serve_forever()


if __name__ == "__main__":
    main()
