"""Peak memory and time of loading a large safetensors checkpoint for serving.

    python bench/checkpoint_load.py [--layers 18] [--keep]

Writes a synthetic Mistral-shaped checkpoint in Hugging Face form (config.json, bf16
model-0000N-of-0000M.safetensors shards + index; dim 2048, 18 layers, 32k vocab: ~1.27 B parameters,
~2.5 GB) under /tmp, then loads it in a fresh process per loader and reports wall time and peak RSS
(ru_maxrss, which counts the checkpoint's memory-mapped pages too) as a markdown table:

- previous int4: what `serve --quantize int4` did before streaming: the whole model built in fp32
  from the memory-mapped files, then `quantize_model` (reproduced here from the same functions);
- streamed int4 / streamed bf16: `load_checkpoint(folder, quantize=...)`, block by block.

"serving size" is the bytes of the loaded model's tensors (int4 layers keep a bf16 copy for
prefill, so int4 serving is larger than bf16). The checkpoint is deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIG = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 2048,
          "intermediate_size": 8192, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
          "max_position_embeddings": 32768, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
          "sliding_window": None, "tie_word_embeddings": False, "vocab_size": 32768,
          "torch_dtype": "bfloat16"}
SHARD_BYTES = 1 << 30
LOADERS = ["previous int4", "streamed int4", "streamed bf16"]


def write_checkpoint(folder: Path, layers: int) -> tuple[int, int]:
    """bf16 random weights, one shard (~1 GB) in memory at a time → (parameters, bytes on disk)."""
    from safetensors.torch import save_file

    c = {**CONFIG, "num_hidden_layers": layers}
    dim, hidden, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"] * c["head_dim"]
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], dim)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (dim,), p + "post_attention_layernorm.weight": (dim,),
                   p + "self_attn.q_proj.weight": (dim, dim), p + "self_attn.k_proj.weight": (kv, dim),
                   p + "self_attn.v_proj.weight": (kv, dim), p + "self_attn.o_proj.weight": (dim, dim),
                   p + "mlp.gate_proj.weight": (hidden, dim), p + "mlp.up_proj.weight": (hidden, dim),
                   p + "mlp.down_proj.weight": (dim, hidden)}
    shapes |= {"model.norm.weight": (dim,), "lm_head.weight": (c["vocab_size"], dim)}
    groups: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = 2 * torch.Size(shape).numel()
        if groups[-1] and size + nbytes > SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    folder.mkdir(parents=True)
    weight_map = {}
    g = torch.Generator().manual_seed(0)
    for i, names in enumerate(groups, 1):
        file = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: (torch.randn(shapes[n], generator=g) * 0.02).to(torch.bfloat16) for n in names},
                  folder / file)
        weight_map |= dict.fromkeys(names, file)
    total = sum(2 * torch.Size(s).numel() for s in shapes.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(c))
    return total // 2, total


def rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def tensor_gb(model: torch.nn.Module) -> float:
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:  # tied or shared storage counts once
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / 2**30


def child(loader: str, folder: Path) -> None:
    """One loader in this (fresh) process; prints a JSON line."""
    from magistral.model.checkpoints import args_from_hf_config, hf_key, load_checkpoint
    from magistral.model.load_common import build_model
    from magistral.model.quantize import quantize_model
    from magistral.model.safetensors_io import open_safetensors, shard_files

    torch.set_grad_enabled(False)
    baseline = rss_gb()
    start = time.perf_counter()
    if loader == "previous int4":  # load_hf + quantize_model as they were: files mapped whole, fp32
        args = args_from_hf_config(json.loads((folder / "config.json").read_text()))
        state = {hf_key(k): v for path in shard_files(folder, "model")
                 for k, v in open_safetensors(path).items()}
        model = build_model(args, state, torch.float32, source=str(folder))
        del state
        quantize_model(model, "int4")
    else:
        model, _ = load_checkpoint(folder, quantize=loader.split()[1])
    seconds = time.perf_counter() - start
    gc.collect()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(json.dumps({"loader": loader, "seconds": seconds, "baseline_gb": baseline, "peak_gb": peak,
                      "after_gb": rss_gb(), "serving_gb": tensor_gb(model)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--keep", action="store_true", help="leave the checkpoint in /tmp")
    parser.add_argument("--child", nargs=2, metavar=("LOADER", "FOLDER"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(options.child[0], Path(options.child[1]))
        return
    folder = Path(tempfile.mkdtemp(prefix="magistral-bench-")) / "synthetic-mistral"
    try:
        start = time.perf_counter()
        params, nbytes = write_checkpoint(folder, options.layers)
        print(f"checkpoint: {params / 1e9:.2f} B parameters, {nbytes / 2**30:.2f} GiB bf16 on disk "
              f"({len(list(folder.glob('*.safetensors')))} shards), written in "
              f"{time.perf_counter() - start:.0f} s\n")
        rows = []
        for loader in LOADERS:
            out = subprocess.run([sys.executable, __file__, "--child", loader, str(folder)], check=True,
                                 capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        print("| loader | load time (s) | peak RSS (GiB) | peak − baseline (GiB) | RSS after load (GiB) "
              "| serving size (GiB) |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['loader']} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | "
                  f"{r['peak_gb'] - r['baseline_gb']:.2f} | {r['after_gb']:.2f} | {r['serving_gb']:.2f} |")
        print(f"\nbaseline: the Python process with torch imported, "
              f"{rows[0]['baseline_gb']:.2f} GiB; checkpoint {nbytes / 2**30:.2f} GiB")
    finally:
        if not options.keep:
            shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
