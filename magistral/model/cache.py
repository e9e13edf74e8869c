"""An explicit key/value cache: one preallocated buffer pair per layer, sized per request."""

from __future__ import annotations

import torch

from magistral.config import ModelArgs


class KVCache:
    """Keys and values of every layer for one sequence batch: (B, n_kv_heads, capacity, head_dim)."""

    def __init__(self, args: ModelArgs, capacity: int, max_capacity: int | None = None,
                 batch_size: int = 1, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        shape = (batch_size, args.n_kv_heads, capacity, args.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]
        self.capacity = capacity
        self.max_capacity = max(capacity, max_capacity or capacity)

    def _grow(self, needed: int) -> None:
        """Double the buffers (up to max_capacity): a request pays for the length it uses."""
        new_capacity = min(max(needed, 2 * self.capacity), self.max_capacity)
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                new = old.new_zeros(*old.shape[:2], new_capacity, old.shape[3])
                new[:, :, :self.capacity] = old
                store[i] = new
        self.capacity = new_capacity

    def update(self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v (B, n_kv, T, D) at start_pos and return everything cached up to start_pos+T."""
        end = start_pos + k.shape[2]
        if end > self.capacity and end <= self.max_capacity:
            self._grow(end)
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: position {end} > capacity {self.capacity}")
        self.keys[layer][:, :, start_pos:end] = k
        self.values[layer][:, :, start_pos:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]
