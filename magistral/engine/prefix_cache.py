"""Prompt-prefix KV reuse: a repeated system prompt or earlier turns are not recomputed.

Prompts are cut into blocks of BLOCK tokens and each block boundary gets a chained hash, so a
new prompt finds the longest cached prefix it shares with any earlier one in one pass; the
whole prompt but its last token gets a key too, so a repeated prompt reuses nearly all of it.
Once the first decode step has computed that last token, its KV and the logits it gave join the
entry (`store_last`): the same prompt again then samples its first token without a forward pass.
Entries are evicted least-recently-used within a byte budget.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from magistral.model.cache import SlotKVCache

BLOCK = 32

Layers = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class _Entry:
    tokens: list[int]
    layers: Layers
    nbytes: int
    keys: list[int]
    last_token: int | None = None  # the prompt's last token, after `tokens`: its KV and logits
    tail: Layers | None = None
    logits: torch.Tensor | None = None


def _chain(tokens: list[int], limit: int) -> list[tuple[int, int]]:
    """(hash, length) at every full block boundary up to `limit` tokens, then at `limit` itself
    (so that a repeated prompt reuses all but its last token)."""
    out, h = [], 0
    for end in range(BLOCK, limit + 1, BLOCK):
        h = hash((h, tuple(tokens[end - BLOCK:end])))
        out.append((h, end))
    aligned = out[-1][1] if out else 0
    if limit > aligned:
        out.append((hash((h, tuple(tokens[aligned:limit]), "tail")), limit))
    return out


class PrefixCache:
    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.used = 0
        self.hits = self.misses = 0
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._index: dict[int, tuple[int, int]] = {}  # chain hash → (entry id, prefix length)
        self._next_id = 0

    def lookup(self, tokens: list[int], aligned: int | None = None) -> tuple[int, Layers] | None:
        """The longest cached prefix, leaving at least the last token to compute. `aligned`: only
        a prefix of a multiple of that many tokens, or one that is a whole entry and all of the
        prompt but its last token — KV computed in the chunks a fresh prefill would use."""
        for h, length in reversed(_chain(tokens, len(tokens) - 1)):
            found = self._index.get(h)
            if found is None:
                continue
            entry = self._entries[found[0]]
            if entry.tokens[:length] != tokens[:length]:  # a hash collision, not a match
                continue
            whole = length == len(entry.tokens) == len(tokens) - 1
            if aligned and length % aligned and not whole:
                continue
            self._entries.move_to_end(found[0])
            self.hits += 1
            return length, [(k[:, :length], v[:, :length]) for k, v in entry.layers]
        self.misses += 1
        return None

    def store(self, tokens: list[int], cache: SlotKVCache, slot: int) -> None:
        """Keep the KV of `tokens`, a prompt without its last token (the slot holds it); a
        later prompt that starts with them reuses it."""
        chain = _chain(tokens, len(tokens))
        if not chain or chain[-1][0] in self._index:
            return
        length = chain[-1][1]
        layers = cache.read(slot, length)
        nbytes = sum(k.numel() * k.element_size() * 2 for k, _ in layers)
        if nbytes > self.budget:
            return
        while self.used + nbytes > self.budget:
            self._evict()
        entry_id, self._next_id = self._next_id, self._next_id + 1
        self._entries[entry_id] = _Entry(tokens[:length], layers, nbytes, [h for h, _ in chain])
        for h, n in chain:
            self._index[h] = (entry_id, n)
        self.used += nbytes

    def _whole(self, tokens: list[int]) -> _Entry | None:
        """The entry holding exactly `tokens` (a prompt without its last token)."""
        chain = _chain(tokens, len(tokens))
        found = self._index.get(chain[-1][0]) if chain else None
        if found is None or found[1] != len(tokens):
            return None
        entry = self._entries[found[0]]
        return entry if entry.tokens == tokens else None

    def store_last(self, prompt: list[int], cache: SlotKVCache, slot: int, logits: torch.Tensor) -> None:
        """After the decode step that computed `prompt`'s last token in `slot`: keep that
        position's KV and the logits it gave, beside the entry of the rest of the prompt."""
        entry = self._whole(prompt[:-1])
        if entry is None or entry.logits is not None:
            return
        entry.tail = cache.read(slot, len(prompt), start=len(prompt) - 1)
        entry.logits, entry.last_token = logits.clone(), prompt[-1]
        extra = entry.logits.numel() * 4 + sum(k.numel() * k.element_size() * 2 for k, _ in entry.tail)
        entry.nbytes += extra
        self.used += extra
        while self.used > self.budget and len(self._entries) > 1:
            self._evict()

    def completion(self, prompt: list[int]) -> tuple[Layers, torch.Tensor] | None:
        """For a prompt whose all-but-last tokens were just found whole: its last position's
        KV and the logits of its first generated token, if stored."""
        entry = self._whole(prompt[:-1])
        if entry is None or entry.logits is None or entry.last_token != prompt[-1]:
            return None
        return entry.tail, entry.logits

    def _evict(self) -> None:
        entry_id, entry = self._entries.popitem(last=False)
        for h in entry.keys:
            if self._index.get(h, (None,))[0] == entry_id:
                del self._index[h]
        self.used -= entry.nbytes

    def __len__(self) -> int:
        return len(self._entries)
