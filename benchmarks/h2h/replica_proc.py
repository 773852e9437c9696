"""One fake vLLM replica in its own process with the head-to-head's timing (`python -m
benchmarks.h2h.replica_proc NAME PORT SPEED MAX_BATCH PREFILL_MS DECODE_MS`)."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler

from examples.fake_replica import FakeReplica, ReplicaProfile
from examples.fake_replica.server import CHAT, COMPLETION

MODEL = "llama"  # every replica serves the same model, as in one model group


def _reading_unknown_posts(handler: type[BaseHTTPRequestHandler]) -> type[BaseHTTPRequestHandler]:
    """vllm-router first POSTs `<route>/render`: the example answers 404 without reading the body,
    which then corrupts the kept-alive connection's next request. vLLM reads it; so does this."""

    class Handler(handler):  # type: ignore[misc, valid-type]
        def do_POST(self) -> None:
            if self.path.split("?", 1)[0].rstrip("/") not in (CHAT, COMPLETION):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
            super().do_POST()

    return Handler


def main(argv: list[str]) -> None:
    name, port, speed, max_batch, prefill_ms, decode_ms = argv
    profile = ReplicaProfile(name, speed=float(speed), max_batch=int(max_batch), model=MODEL,
                             prefill_ms_per_token=float(prefill_ms), decode_ms_per_token=float(decode_ms))
    replica = FakeReplica(profile, port=int(port))
    replica.server.RequestHandlerClass = _reading_unknown_posts(replica.server.RequestHandlerClass)
    replica.server.socket.listen(1024)  # a router may open many connections at once
    print(f"{name} speed {speed} on {replica.url}", flush=True)
    replica.server.serve_forever(0.05)


if __name__ == "__main__":
    main(sys.argv[1:])
