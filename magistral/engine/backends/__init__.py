"""Other engines behind the native engine's interface: `generate(request)` yields
GenerationOutput, plus `active_count`, `queued_count` and `shutdown()`."""
