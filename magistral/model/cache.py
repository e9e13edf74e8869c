"""An explicit key/value cache: one preallocated buffer pair per layer, sized per request.

Every cache (or view of the slot cache) hands each layer a `LayerKV`: attention stores its new
keys and values there and gets back what it attends over. A layer never sees its own index, so
all layers run the same code — one compiled decode block serves every layer (engine/compiled.py).
"""

from __future__ import annotations

from typing import Protocol

import torch

from magistral.config import ModelArgs

PV_BLOCK = 64  # positions per partial sum of decode attention's weighted values (layers.py)


def resize_buffers(keys: list[torch.Tensor], values: list[torch.Tensor], rows: int, capacity: int) -> None:
    """Replace every (rows, …, capacity, D) buffer in its list by one of the new size, keeping
    what fits of the old."""
    for store in (keys, values):
        for i, old in enumerate(store):
            new = old.new_zeros(rows, old.shape[1], capacity, old.shape[3])
            kept_rows, kept = min(rows, old.shape[0]), min(capacity, old.shape[2])
            new[:kept_rows, :, :kept] = old[:kept_rows, :, :kept]
            store[i] = new


def doubled(size: int, needed: int, limit: int) -> int:
    """Grow by doubling (amortised copies), to at least `needed`, at most `limit`."""
    return size if needed <= size else min(max(needed, 2 * size), limit)


class LayerKV(Protocol):
    mask: torch.Tensor | None  # (B, 1, 1, L): which cached positions each row may attend to

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v (B, n_kv, T, D) at start_pos; return the (B, n_kv, L, D) keys and values."""
        ...


class _LayerOf:
    """Layer `index` of a cache whose `update` takes the layer's index."""

    mask = None  # prompts: rows share positions

    def __init__(self, cache: KVCache | SlotView | NewPromptsView, index: int):
        self.cache, self.index = cache, index

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.update(self.index, start_pos, k, v)


class KVCache:
    """Keys and values of every layer for one sequence batch: (B, n_kv_heads, capacity, head_dim)."""

    mask = None  # all rows share positions

    def __init__(self, args: ModelArgs, capacity: int, max_capacity: int | None = None,
                 batch_size: int = 1, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        shape = (batch_size, args.n_kv_heads, capacity, args.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]
        self.capacity = capacity
        self.max_capacity = max(capacity, max_capacity or capacity)

    def _grow(self, needed: int) -> None:
        self.capacity = doubled(self.capacity, needed, self.max_capacity)
        resize_buffers(self.keys, self.values, self.keys[0].shape[0], self.capacity)

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

    def layer(self, index: int) -> LayerKV:
        return _LayerOf(self, index)


class SlotKVCache:
    """One buffer pair per layer shared by up to `slots` sequences, (held slots, n_kv, capacity, D),
    so one decode step can attend for every running sequence at once. Sequences occupy slots
    0..n-1 (the engine keeps them packed). The slots held and their capacity both grow by
    doubling as sequences need them, and `shrink` goes back to the first size when none runs:
    one long request no longer holds a long buffer for every slot, nor a burst of requests
    their buffers after it ends."""

    def __init__(self, args: ModelArgs, slots: int, capacity: int, max_capacity: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        self.args, self.slots, self.dtype, self.device = args, slots, dtype, torch.device(device)
        self.max_capacity = max_capacity
        self.initial = (min(2, slots), min(capacity, max_capacity))
        self.held, self.capacity = self.initial
        shape = (self.held, args.n_kv_heads, self.capacity, args.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]

    def ensure(self, needed: int, slots: int = 0) -> None:
        """Room for `needed` positions in each of the first `slots` slots."""
        if needed <= self.capacity and slots <= self.held:
            return
        if needed > self.max_capacity:
            raise ValueError(f"KV cache overflow: position {needed} > capacity {self.max_capacity}")
        if slots > self.slots:
            raise ValueError(f"slot {slots - 1} of a cache of {self.slots}")
        self._resize(doubled(self.held, slots, self.slots), doubled(self.capacity, needed, self.max_capacity))

    def fit(self, slots: int, length: int) -> None:
        """After a sequence ends: halve the slots held while a quarter of them holds the `slots`
        in use, and the capacity while a quarter of it holds `length` positions (the longest
        running sequence), so a long request's buffers do not stay for the short ones after
        it. (A quarter, not a half: one arrival must not grow it straight back.)"""
        held, capacity = self.held, self.capacity
        while held > self.initial[0] and held // 4 >= slots:
            held //= 2
        while capacity > self.initial[1] and capacity // 4 >= length:
            capacity //= 2
        self._resize(held, capacity)

    def shrink(self) -> None:
        """Back to the first size (when no sequence runs)."""
        self._resize(*self.initial)

    def _resize(self, held: int, capacity: int) -> None:
        if (held, capacity) != (self.held, self.capacity):
            self.held, self.capacity = held, capacity
            resize_buffers(self.keys, self.values, held, capacity)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.keys, *self.values])

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy a sequence's cached positions to another slot (keeps the slots packed)."""
        self.ensure(length, max(src, dst) + 1)
        for store in (self.keys, self.values):
            for buf in store:
                buf[dst, :, :length] = buf[src, :, :length]

    def read(self, slot: int, length: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(k, v) per layer for a slot's positions [start, length), as copies."""
        return [(k[slot, :, start:length].clone(), v[slot, :, start:length].clone())
                for k, v in zip(self.keys, self.values, strict=True)]

    def write(self, slot: int, layers: list[tuple[torch.Tensor, torch.Tensor]], start: int = 0) -> None:
        """Store per-layer (k, v) at a slot's positions from `start`."""
        end = start + layers[0][0].shape[1]
        self.ensure(end, slot + 1)
        for (k, v), kbuf, vbuf in zip(layers, self.keys, self.values, strict=True):
            kbuf[slot, :, start:end] = k
            vbuf[slot, :, start:end] = v

    def for_slot(self, slot: int) -> SlotView:
        return SlotView(self, slot)

    def for_decode(self, positions: list[int]) -> DecodeView:
        return DecodeView(self, positions)

    def for_new_prompts(self, slots: list[int], start: int = 0) -> NewPromptsView:
        return NewPromptsView(self, slots, start)


class SlotView:
    """One slot as a single-sequence cache (prefill writes here)."""

    mask = None

    def __init__(self, cache: SlotKVCache, slot: int):
        self.cache, self.slot = cache, slot

    def update(self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        end = start_pos + k.shape[2]
        self.cache.ensure(end, self.slot + 1)
        kbuf, vbuf = self.cache.keys[layer], self.cache.values[layer]
        kbuf[self.slot:self.slot + 1, :, start_pos:end] = k
        vbuf[self.slot:self.slot + 1, :, start_pos:end] = v
        return kbuf[self.slot:self.slot + 1, :, :end], vbuf[self.slot:self.slot + 1, :, :end]

    def layer(self, index: int) -> LayerKV:
        return _LayerOf(self, index)


class NewPromptsView:
    """Several slots prefilled together from `start` (0, or the end of a prefix they share and
    already hold), prompts right-padded to one length: the padding's keys and values lie beyond
    each prompt, where decoding overwrites them before any query can see them."""

    mask = None

    def __init__(self, cache: SlotKVCache, slots: list[int], start: int = 0):
        self.cache, self.slots, self.start = cache, torch.tensor(slots, device=cache.device), start
        self.held = max(slots) + 1

    def update(self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        assert start_pos == self.start, f"these prompts continue at position {self.start}"
        end = start_pos + k.shape[2]
        self.cache.ensure(end, self.held)
        self.cache.keys[layer][self.slots, :, start_pos:end] = k
        self.cache.values[layer][self.slots, :, start_pos:end] = v
        if start_pos == 0:
            return k, v  # everything cached for these rows is what was just computed
        return self.cache.keys[layer][self.slots, :, :end], self.cache.values[layer][self.slots, :, :end]

    def layer(self, index: int) -> LayerKV:
        return _LayerOf(self, index)


class DecodeView:
    """Slots 0..B-1 each take one new token at its own position; `mask` hides every slot's
    positions beyond its own."""

    def __init__(self, cache: SlotKVCache, positions: list[int]):
        # whole blocks of decode attention's value sums (layers.decode_attention): positions past
        # a slot's own are masked and hold zeros or older finite values, so nothing is copied.
        # At least two blocks: a compiled step would need a graph of its own for one block.
        blocks = max(2, -(-(max(positions) + 1) // PV_BLOCK))
        self.length = min(blocks * PV_BLOCK, cache.max_capacity)
        # before any layer, so the buffers stay put for this step; longer than the attention span
        # (a compiled step's graph holds for capacity > length, and would need another for ==)
        cache.ensure(min(self.length + 1, cache.max_capacity), len(positions))
        self.keys, self.values = cache.keys, cache.values
        self.rows = torch.arange(len(positions), device=cache.device)
        self.positions = torch.tensor(positions, device=cache.device)
        span = torch.arange(self.length, device=cache.device)
        self.mask = (span[None, :] <= self.positions[:, None])[:, None, None, :]

    def layer(self, index: int) -> DecodeLayer:
        return DecodeLayer(self.keys[index], self.values[index], self.rows, self.positions, self.mask)


class DecodeLayer:
    """One layer's slot buffers in a decode step: tensors only (no index, no lengths as
    Python numbers), so a compiled block sees the same kinds of inputs in every layer."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor,
                 positions: torch.Tensor, mask: torch.Tensor):
        self.keys, self.values, self.rows, self.positions, self.mask = keys, values, rows, positions, mask

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length = self.mask.shape[0], self.mask.shape[-1]
        self.keys[self.rows, :, self.positions] = k[:, :, 0]
        self.values[self.rows, :, self.positions] = v[:, :, 0]
        return self.keys[:batch, :, :length], self.values[:batch, :, :length]
