"""Benchmarks run against any Mistral- or OpenAI-compatible endpoint (ours, Mistral's, vLLM's)."""
