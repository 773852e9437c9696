"""Runnable examples: an OpenAI-compatible gateway using `rlagent_client`, fake LLM replicas, and
`python -m examples.run_demo`, which starts them and sends traffic through."""
