"""`python -m examples.fake_replica`: one fake replica in the foreground."""

from __future__ import annotations

import argparse

from examples.fake_replica import FakeReplica, ReplicaProfile


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake LLM replica that speaks vLLM's HTTP API.")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--speed", type=float, default=1.0, help="2.0 answers twice as fast as 1.0")
    parser.add_argument("--name", default="replica")
    parser.add_argument("--model", default="", help="served model name (default: --name)")
    parser.add_argument("--max-batch", type=int, default=ReplicaProfile.max_batch,
                        help="running sequences at most; the rest wait (vLLM's --max-num-seqs)")
    parser.add_argument("--no-prefix-caching", action="store_true", help="every prompt is prefilled in full")
    args = parser.parse_args(argv)
    profile = ReplicaProfile(args.name, speed=args.speed, model=args.model, max_batch=args.max_batch,
                             prefix_caching=not args.no_prefix_caching)
    replica = FakeReplica(profile, port=args.port, host=args.host)
    print(f"{args.name} (speed {args.speed:g}x, max batch {args.max_batch}) on {replica.url}", flush=True)
    replica.server.serve_forever()


if __name__ == "__main__":
    main()
