"""Head to head on fake vLLM replicas: vllm-router, LiteLLM's strategies, the RL agent (through
LiteLLM and through the example client) and client-side least-loaded, on the same Azure code trace
arrivals. `python -m benchmarks.head_to_head --help`; docs/BENCHMARKS.md has the latest figures."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.h2h import workload as wl
from benchmarks.h2h.routers import ClientRouter, LiteLLMRouter, VllmRouter, agent_client
from simulator.live_service import LiveStack, free_port, services_reachable
from simulator.replay import cached_trace, trace_path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path("/tmp/venv-vllm-router")
ROUTERS = ("vllm-cache_aware", "vllm-power_of_two", "litellm-simple-shuffle", "litellm-least-busy",
           "litellm-latency-based-routing", "litellm-rl-plugin", "client-rl", "client-least-loaded")
AGENT_ROUTERS = ("litellm-rl-plugin", "client-rl")


def vllm_router_binary(given: str | None) -> str:
    """--vllm-router-bin, or vllm-router from PyPI in a virtual environment of its own."""
    if given:
        return given
    binary = VENV / "bin" / "vllm-router"
    if not binary.exists():
        print(f"installing vllm-router into {VENV} ...", flush=True)
        python = shutil.which("python3.11") or sys.executable
        subprocess.run([python, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "vllm-router"], check=True)
    return str(binary)


class Cluster:
    """Three fake replicas, each its own process, restarted fresh (empty queues and caches) per run."""

    def __init__(self, model: wl.ClusterModel, log_dir: Path) -> None:
        self.model = model
        self.names = [f"r{i}-speed{speed:g}" for i, speed in enumerate(model.speeds)]
        self.ports = [free_port() for _ in model.speeds]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        m = self.model
        for name, port, speed in zip(self.names, self.ports, m.speeds, strict=True):
            args = [name, str(port), str(speed), str(m.max_batch), str(m.prefill_ms_per_token),
                    str(m.decode_ms_per_token)]
            log = (self.log_dir / f"{name}.log").open("ab")
            self.procs.append(subprocess.Popen([sys.executable, "-m", "benchmarks.h2h.replica_proc", *args],
                                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        for url in self.urls:
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {url} did not start")
                time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)
        self.procs = []


async def replay(router: Any, requests: list[wl.Request], tag: str, label: str) -> list[wl.Outcome]:
    """Send each request at its arrival time (open loop: arrivals never wait for answers)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks: list[asyncio.Task] = []
    done = [0, 0]

    def finished(task: asyncio.Task) -> None:
        done[0] += 1
        done[1] += 0 if task.result().ok else 1

    async def progress() -> None:
        while True:
            await asyncio.sleep(10)
            print(f"    {label}: {loop.time() - t0:5.0f} s, sent {len(tasks)}/{len(requests)}, "
                  f"done {done[0]}, failed {done[1]}", flush=True)

    ticker = asyncio.create_task(progress())
    for request in requests:
        delay = t0 + request.at_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(router.send(request, tag))
        task.add_done_callback(finished)
        tasks.append(task)
    outcomes = list(await asyncio.gather(*tasks))
    ticker.cancel()
    return outcomes


def make_router(key: str, cluster: Cluster, args: argparse.Namespace, binary: str, stack: LiveStack | None,
                log_dir: Path) -> Any:
    names, urls = cluster.names, cluster.urls
    if key.startswith("vllm-"):
        return VllmRouter(binary, key.removeprefix("vllm-"), urls, free_port(), free_port(),
                          log_dir / "vllm-router.log")
    if key == "litellm-rl-plugin":
        client = agent_client(stack.url(""), stack.api_key, names, urls, args.timeout_ms)
        return LiteLLMRouter(names, urls, "simple-shuffle", client)
    if key.startswith("litellm-"):
        return LiteLLMRouter(names, urls, key.removeprefix("litellm-"))
    if key == "client-rl":
        client = agent_client(stack.url(""), stack.api_key, names, urls, args.timeout_ms)
        return ClientRouter(names, urls, client)
    return ClientRouter(names, urls)


async def run_one(key: str, requests: list[wl.Request], tag: str, cluster: Cluster, args: argparse.Namespace,
                  binary: str, stack: LiveStack | None, log_dir: Path) -> tuple[dict[str, float], dict]:
    cluster.start()
    router = make_router(key, cluster, args, binary, stack, log_dir)
    try:
        await router.start()
        started = time.monotonic()
        outcomes = await replay(router, requests, tag, router.name)
        elapsed = time.monotonic() - started
        picks = router.picks() if hasattr(router, "picks") else {}
        await router.close()
    finally:
        client = getattr(router, "client", None)
        if client is not None:
            client.close()  # flushes the queued reports
        cluster.stop()
    row = wl.summarize(outcomes, cluster.names)
    errors: dict[str, int] = {}
    for outcome in outcomes:
        if not outcome.ok:
            errors[outcome.error] = errors.get(outcome.error, 0) + 1
    return row, {"seconds": round(elapsed, 1), "picks": picks, "errors": errors}


def print_run(title: str, run: dict[str, dict[str, float]], names: list[str]) -> None:
    ratios = wl.ratios_to_best(run)
    print(f"\n{title}")
    print(f"  {'router':32} {'mean':>7} {'p50':>7} {'p99':>7} {'ttft':>6} {'ttft99':>7} {'fail':>4}  "
          f"{'shares':18} mean/best")
    for key, row in run.items():
        shares = "/".join(f"{row[f'share_{n}']:.2f}" for n in names)
        print(f"  {key:32} {row['mean_ms']:7.0f} {row['p50_ms']:7.0f} {row['p99_ms']:7.0f} "
              f"{row['ttft_mean_ms']:6.0f} {row['ttft_p99_ms']:7.0f} {row['failures']:4.0f}  {shares:18} "
              f"{ratios[key]['mean_ms']:.2f}", flush=True)


def print_summary(runs: list[dict[str, dict[str, float]]], names: list[str]) -> dict[str, Any]:
    """Per router over the seeds: the median (min-max) of each figure and of its ratio to the best."""
    keys = list(runs[0])
    ratios = [wl.ratios_to_best(run) for run in runs]
    summary: dict[str, Any] = {}
    print(f"\nover {len(runs)} seeds: median (min-max); ratio = figure / best router's in the same run")
    print(f"  {'router':32} {'mean ms':>19} {'p99 ms':>21} {'ttft p99 ms':>19} {'fail':>4}  shares       "
          f"{'mean ratio':>17} {'p99 ratio':>17}")
    for key in keys:
        figures = {f: wl.median_and_spread([run[key][f] for run in runs]) for f in runs[0][key]}
        figures.update({f"ratio_{f}": wl.median_and_spread([r[key][f] for r in ratios])
                        for f in wl.RATIO_KEYS})
        summary[key] = figures

        def cell(f: str, digits: int = 0, figures: dict = figures) -> str:
            med, low, high = figures[f]
            return f"{med:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"

        shares = "/".join(f"{figures[f'share_{n}'][0]:.2f}" for n in names)
        print(f"  {key:32} {cell('mean_ms'):>19} {cell('p99_ms'):>21} {cell('ttft_p99_ms'):>19} "
              f"{sum(run[key]['failures'] for run in runs):4.0f}  {shares}  "
              f"{cell('ratio_mean_ms', 2):>17} {cell('ratio_p99_ms', 2):>17}", flush=True)
    return summary


async def main_async(args: argparse.Namespace) -> None:
    began = time.monotonic()
    wants_vllm = any(k.startswith("vllm-") for k in args.routers)
    binary = vllm_router_binary(args.vllm_router_bin) if wants_vllm else ""
    model = wl.ClusterModel(max_batch=args.max_batch)
    trace = cached_trace(str(trace_path("azure-code")))
    prompts, outputs = wl.clip_outputs(trace, args.max_output)
    capacity = model.capacity_rps(prompts, outputs)
    rate = args.load * capacity
    warmup_reqs, slices = wl.slices(trace, rate, args.warmup, args.requests, args.seeds, args.max_output)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="h2h-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(model, log_dir)
    print(f"replicas {cluster.names} (max batch {model.max_batch}, {model.decode_ms_per_token:g} ms/token "
          f"at speed 1); Azure code trace, outputs capped at {args.max_output}; estimated capacity "
          f"{capacity:.2f} req/s, replaying at {args.load:.0%} = {rate:.2f} req/s; {args.requests} requests "
          f"per run x {len(args.routers)} routers x {args.seeds} seeds; logs in {log_dir}", flush=True)
    stack = None
    if any(k in AGENT_ROUTERS for k in args.routers):
        print("starting the service (web, training worker, beat) on a fresh database ...", flush=True)
        # A port of its own: 5000 may belong to another service on this host.
        stack = LiveStack(log_dir / "service", services_reachable(), free_port(),
                          TRAINING_INTERVAL_SECONDS=str(args.train_every),
                          RL_GATE_MIN_OUTCOMES=str(args.gate_min_outcomes))
        for process in ("web", "worker", "beat"):
            stack.start(process)
    try:
        if stack is not None and args.warmup:
            print(f"warm-up: {len(warmup_reqs)} earlier requests of the trace through the LiteLLM plugin",
                  flush=True)
            await run_one("litellm-rl-plugin", warmup_reqs, "warmup", cluster, args, binary, stack, log_dir)
            print(f"  service after warm-up: {json.dumps(service_view(stack))}", flush=True)
        runs, details = [], []
        for seed, requests in enumerate(slices):
            run, detail = {}, {}
            for key in args.routers:
                print(f"seed {seed}: {key} ...", flush=True)
                run[key], detail[key] = await run_one(key, requests, f"s{seed}", cluster, args, binary, stack,
                                                      log_dir)
                print(f"  {key}: mean {run[key]['mean_ms']:.0f} ms, p99 {run[key]['p99_ms']:.0f} ms, "
                      f"failures {run[key]['failures']:.0f}, {json.dumps(detail[key])}", flush=True)
            if stack is not None:
                detail["service"] = service_view(stack)
                print(f"  service: {json.dumps(detail['service'])}", flush=True)
            print_run(f"seed {seed} (trace requests {args.warmup + seed * args.requests}.."
                      f"{args.warmup + (seed + 1) * args.requests - 1})", run, cluster.names)
            runs.append(run)
            details.append(detail)
        summary = print_summary(runs, cluster.names)
    finally:
        if stack is not None:
            stack.close()
    minutes = (time.monotonic() - began) / 60
    print(f"\ntotal {minutes:.1f} min", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "capacity_rps": capacity, "rate_rps": rate,
                                              "runs": runs, "details": details, "summary": summary,
                                              "minutes": minutes}, indent=1, default=str))


def service_view(stack: LiveStack) -> dict[str, Any]:
    stats = stack.call("GET", "/stats").json()
    routing = stats.get("routing") or {}
    return {"routes": routing.get("routes"), "arms": routing.get("arms"),
            "steps_done": stats.get("steps_done"), "buffer_size": stats.get("buffer_size"),
            "model_version": stats.get("model_version")}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="requests per measured run")
    parser.add_argument("--warmup", type=int, default=500, help="earlier requests the agent learns from")
    parser.add_argument("--seeds", type=int, default=3, help="measured slices, after the warm-up")
    parser.add_argument("--load", type=float, default=0.75, help="share of the estimated capacity")
    parser.add_argument("--max-batch", type=int, default=4, help="running requests per replica at most")
    parser.add_argument("--max-output", type=int, default=400, help="cap on the trace's output tokens")
    parser.add_argument("--routers", nargs="+", default=list(ROUTERS), choices=ROUTERS)
    parser.add_argument("--timeout-ms", type=float, default=100.0, help="the agent client's select budget")
    parser.add_argument("--train-every", type=int, default=10, help="service: TRAINING_INTERVAL_SECONDS")
    parser.add_argument("--gate-min-outcomes", type=int, default=100, help="service: RL_GATE_MIN_OUTCOMES")
    parser.add_argument("--vllm-router-bin", help="vllm-router executable (default: install into /tmp)")
    parser.add_argument("--log-dir", help="folder for the replicas', routers' and service's logs")
    parser.add_argument("--out", help="write every figure as JSON here")
    return parser.parse_args(argv)


async def until_stopped(args: argparse.Namespace) -> None:
    """Run; SIGTERM or Ctrl-C cancels the run, so every `finally` stops what it started (replicas,
    routers, the service and its database)."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    await main_async(args)


def main(argv: list[str] | None = None) -> None:
    try:
        asyncio.run(until_stopped(parse(argv)))
    except asyncio.CancelledError:
        sys.exit("stopped")


if __name__ == "__main__":
    main()
