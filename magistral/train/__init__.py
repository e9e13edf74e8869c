"""Training our own models: generated tasks, tokenizer and model presets, SFT and GRPO."""
