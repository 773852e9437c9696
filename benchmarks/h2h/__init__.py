"""Parts of benchmarks/head_to_head.py: the workload and summaries, the routers, a replica process."""
