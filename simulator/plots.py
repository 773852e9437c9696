"""PNG plots of a benchmark: TTFT and end-to-end latency CDFs per policy and the learner's
curve (Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():  # imported lazily: the simulator itself needs no matplotlib
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_cdf(latencies: dict[str, dict[str, np.ndarray]], title: str, path: Path) -> Path:
    """Empirical CDFs of successful requests' TTFT and end-to-end latency side by side, one
    line per policy, log x axis."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    colors = plt.get_cmap("tab20").colors
    for ax, key, label in ((axes[0], "ttft", "time to first token"),
                           (axes[1], "e2e", "end-to-end latency")):
        for i, (name, lat) in enumerate(latencies.items()):
            values = lat[key][~np.isnan(lat[key])] if key in lat else np.array([])
            if values.size:
                xs = np.sort(np.maximum(values, 1.0)) / 1000.0
                learner = name.startswith("dqn")  # the learner stands out: black, thick
                ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=name,
                        lw=2.2 if learner else 1.2, color="black" if learner else colors[i % 20])
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} (s, log)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("fraction of successful requests")
    axes[1].legend(loc="lower right", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve(curve: dict, baselines: dict[str, float], title: str, path: Path) -> Path:
    """Rolling latency and reward vs requests seen; heuristics' eval means as lines."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    x = np.asarray(curve["requests"])
    ax1.plot(x, np.asarray(curve["latency_ms"]) / 1000.0, color="black", lw=1.2,
             label="dqn (rolling)")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, value) in enumerate(baselines.items()):
        ax1.axhline(value / 1000.0, ls="--", lw=1, color=colors[i % len(colors)], label=name)
    ax2.plot(x, curve["reward"], color="tab:blue", lw=1.2)
    for ax in (ax1, ax2):
        ax.axvline(curve["train_requests"], color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("mean latency (s)")
    ax1.legend(fontsize=8, ncol=2)
    ax2.set_ylabel("mean reward")
    ax2.set_xlabel("requests seen (training | evaluation)")
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(bench: object, out: Path) -> list[Path]:
    """Every plot for a ``runner.Benchmark``: one CDF per scenario, one curve per learner."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for sc_name in bench.results:
        lat = {p: v for (s, p), v in bench.latencies.items() if s == sc_name}
        safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in sc_name)
        written.append(latency_cdf(lat, f"{sc_name}: latency CDFs (first seed)",
                                   out / f"latency_cdf_{safe}.png"))
        policies = bench.results[sc_name]["policies"]
        for (s, p), curve in bench.curves.items():
            if s != sc_name:
                continue
            lines = {n: v["aggregate"]["mean_ms"]["mean"] for n, v in policies.items() if n != p}
            written.append(learning_curve(curve, lines, f"{sc_name}: {p} learning curve",
                                          out / f"learning_{p}_{safe}.png"))
    return written
