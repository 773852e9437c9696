"""Discrete-event simulator of an LLM serving cluster and the routing-policy benchmark."""
