"""Memory-mapped safetensors reading: tensors are views of the file's pages, not copies.

Two ways in: `open_safetensors` maps a whole file at once; `index_safetensors` reads only the
headers and gives a `TensorRef` per tensor, whose `load()` maps just that tensor's pages, so a
loader can take a large checkpoint one tensor at a time and hand the pages back as it goes.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def _read_header(path: Path) -> tuple[dict, int]:
    """(the JSON header, the file offset where tensor data starts)."""
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(header_len)), 8 + header_len


def _dtype(name: str, info: dict, path: Path) -> torch.dtype:
    if info["dtype"] not in _DTYPES:  # e.g. F8_E4M3: a checkpoint quantised for another runtime
        raise ValueError(f"{path.name}: tensor {name} has dtype {info['dtype']}, which we do not read "
                         f"(supported: {', '.join(_DTYPES)})")
    return _DTYPES[info["dtype"]]


def open_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of one file, backed by a private (copy-on-write) memory map."""
    path = Path(path)
    header, base = _read_header(path)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _dtype(name, info, path)
        start, end = info["data_offsets"]
        count = (end - start) // dtype.itemsize
        flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=base + start) if count else \
            torch.empty(0, dtype=dtype)
        tensors[name] = flat.view(info["shape"])
    return tensors


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lies in a safetensors file; nothing is read until `load()`."""

    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # of its first byte in the file
    nbytes: int

    def load(self) -> torch.Tensor:
        """A copy-on-write view of just this tensor's pages. The mapping belongs to the tensor:
        once the last view of it is freed the pages leave this process, which is what lets a
        loader stream a checkpoint larger than memory."""
        if self.nbytes == 0:
            return torch.empty(self.shape, dtype=self.dtype)
        start = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY  # mmap offsets are page-aligned
        with open(self.path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), self.offset + self.nbytes - start, offset=start,
                               access=mmap.ACCESS_COPY)
        flat = torch.frombuffer(mapped, dtype=self.dtype, count=self.nbytes // self.dtype.itemsize,
                                offset=self.offset - start)
        return flat.view(self.shape)


def index_safetensors(path: str | Path) -> dict[str, TensorRef]:
    """Every tensor of one file, by name, from its header alone."""
    path = Path(path)
    header, base = _read_header(path)
    refs = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        refs[name] = TensorRef(path, _dtype(name, info, path), tuple(info["shape"]), base + start,
                               end - start)
    return refs


def index_files(paths: list[Path]) -> dict[str, TensorRef]:
    """The tensors of several shards; a name found in two of them is an error (mixed layouts)."""
    refs: dict[str, TensorRef] = {}
    for path in paths:
        for name, ref in index_safetensors(path).items():
            if name in refs:
                raise ValueError(f"tensor {name} is in both {refs[name].path.name} and {path.name}")
            refs[name] = ref
    return refs


def shard_files(folder: Path, stem: str) -> list[Path]:
    """The files of one checkpoint layout in `folder`: those its index (`{stem}.safetensors.index.json`)
    lists, else `{stem}.safetensors` or `{stem}-0000N-of-0000M.safetensors`. Published repos
    ship Hugging Face shards (stem "model") and Mistral's (stem "consolidated") side by side, so
    each layout reads only its own files."""
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{index.name} lists {', '.join(missing)}, missing from {folder} "
                                    "(an incomplete download?)")
        return [folder / name for name in names]
    return sorted(p for p in folder.glob(f"{stem}*.safetensors")
                  if p.name == f"{stem}.safetensors" or p.name.startswith(f"{stem}-"))


def save_sharded(tensors: dict[str, torch.Tensor], folder: Path, stem: str,
                 max_shard_bytes: int | None = None) -> list[Path]:
    """Write `tensors` as published checkpoints are: one `{stem}.safetensors`, or (when they
    exceed `max_shard_bytes`) `{stem}-0000N-of-0000M.safetensors` shards plus the index
    `{stem}.safetensors.index.json` mapping each tensor to its shard."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor.contiguous()
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], folder / f"{stem}.safetensors")
        return [folder / f"{stem}.safetensors"]
    paths, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        path = folder / f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, path)
        paths.append(path)
        weight_map.update(dict.fromkeys(shard, path.name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / f"{stem}.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return paths
