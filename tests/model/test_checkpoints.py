"""Our loader + model against transformers' reference implementations, on tiny random
checkpoints the tests save themselves (fp32, max |Δlogit| ≤ 1e-4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from magistral.model.cache import KVCache
from magistral.model.checkpoints import load_consolidated, load_hf, save_consolidated

transformers = pytest.importorskip("transformers")
TOL = 1e-4
TEXT = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
            tie_word_embeddings=False)


def save(model, folder: Path, **kwargs) -> Path:
    model.save_pretrained(folder, **kwargs)
    return folder


def random_ids(n: int, vocab: int = 300) -> torch.Tensor:
    return torch.randint(20, vocab, (1, n), generator=torch.Generator().manual_seed(n))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def text_reference(kind: str):
    torch.manual_seed(0)
    if kind == "mistral":
        return transformers.MistralForCausalLM(transformers.MistralConfig(**TEXT, rope_theta=1e6,
                                                                          sliding_window=None))
    if kind == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**TEXT, rope_theta=5e5))
    return transformers.MixtralForCausalLM(transformers.MixtralConfig(
        **TEXT, num_local_experts=4, num_experts_per_tok=2, rope_theta=1e6, sliding_window=None))


@pytest.mark.parametrize("kind", ["mistral", "llama", "mixtral"])
def test_text_models_match_transformers(kind: str, tmp_path: Path) -> None:
    reference = text_reference(kind).eval()
    ours, _ = load_hf(save(reference, tmp_path))
    ids = random_ids(40)
    with torch.no_grad():
        assert max_diff(ours(ids), reference(ids).logits) <= TOL
        # the consolidated (Mistral format) conversion of the same weights
        converted, _ = load_consolidated(save_consolidated(ours, tmp_path / "consolidated"))
        assert max_diff(converted(ids), reference(ids).logits) <= TOL


def test_sharded_checkpoint_loads(tmp_path: Path) -> None:
    reference = text_reference("mistral").eval()
    save(reference, tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours, _ = load_hf(tmp_path)
    ids = random_ids(12)
    with torch.no_grad():
        assert max_diff(ours(ids), reference(ids).logits) <= TOL


def test_strict_loading_names_the_bad_key(tmp_path: Path) -> None:
    reference = text_reference("mistral")
    save(reference, tmp_path)
    state = {k: v for k, v in reference.state_dict().items() if "layers.1.mlp.up_proj" not in k}
    state["model.layers.0.mystery.weight"] = torch.zeros(2)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"layers\.1\.feed_forward\.w3\.weight.*mystery"):
        load_hf(tmp_path)


def test_moe_paths_agree_and_incremental_decoding_matches(tmp_path: Path) -> None:
    ours, _ = load_hf(save(text_reference("mixtral").eval(), tmp_path))
    ids = random_ids(24)
    with torch.no_grad():
        batched = ours(ids)
        for layer in ours.layers:
            layer.feed_forward.batched = False
        per_expert = ours(ids)
        assert max_diff(batched, per_expert) <= 1e-5
        cache = KVCache(ours.args, 24)
        steps = [ours(ids[:, :10], 0, cache)] + [ours(ids[:, i:i + 1], i, cache) for i in range(10, 24)]
    full = torch.log_softmax(batched, -1)
    assert max_diff(full, torch.log_softmax(torch.cat(steps, 1), -1)) <= TOL


def vision_config(**kw):
    return transformers.PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, head_dim=8, patch_size=4,
                                            image_size=64, hidden_act="silu", **kw)


def images_two_sizes() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(3, 16, 24, generator=g), torch.randn(3, 32, 8, generator=g)]


def test_vision_encoder_matches_pixtral(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = transformers.PixtralVisionModel(vision_config()).eval()
    ours, _ = load_hf(save(mistral3_reference(), tmp_path))  # gives our encoder its shape
    state = {}
    from magistral.model.checkpoints import hf_key
    for key, tensor in reference.state_dict().items():
        state[hf_key("vision_tower." + key).removeprefix("vision_encoder.")] = tensor
    ours.vision_encoder.load_state_dict(state)
    images = images_two_sizes()
    with torch.no_grad():
        theirs = reference(torch.stack([torch.nn.functional.pad(i, (0, 24 - i.shape[2], 0, 32 - i.shape[1]))
                                        for i in images]),
                           image_sizes=torch.tensor([list(i.shape[1:]) for i in images])).last_hidden_state
        mine, grids = ours.vision_encoder(images)
    assert grids == [(4, 6), (8, 2)]
    assert max_diff(mine, theirs[0]) <= TOL


def mistral3_reference():
    torch.manual_seed(0)
    text = transformers.MistralConfig(**TEXT, rope_theta=1e9, sliding_window=None)
    config = transformers.Mistral3Config(vision_config=vision_config(), text_config=text,
                                         image_token_index=10, spatial_merge_size=2,
                                         tie_word_embeddings=False)
    return transformers.Mistral3ForConditionalGeneration(config).eval()


def test_mistral3_text_and_two_images_match_transformers(tmp_path: Path) -> None:
    reference = mistral3_reference()
    ours, _ = load_hf(save(reference, tmp_path))
    images = images_two_sizes()
    # 16x24 px → 2x3 merged tokens, 32x8 → 4x1: rows of [IMG] ended by [IMG_BREAK], last [IMG_END]
    layout = []
    for rows, cols in [(2, 3), (4, 1)]:
        tokens = ([10] * cols + [12]) * rows
        tokens[-1] = 13
        layout += tokens + [50, 51]
    ids = torch.tensor([[1, 3, 40, 41, *layout, 42, 4]])
    padded = torch.stack([torch.nn.functional.pad(i, (0, 24 - i.shape[2], 0, 32 - i.shape[1]))
                          for i in images])
    with torch.no_grad():
        theirs = reference(input_ids=ids, pixel_values=padded,
                           image_sizes=torch.tensor([list(i.shape[1:]) for i in images])).logits
        mine = ours(None, embeddings=ours.embed(ids, images))
        assert max_diff(mine, theirs) <= TOL
        converted, _ = load_consolidated(save_consolidated(ours, tmp_path / "consolidated"))
        assert max_diff(converted(None, embeddings=converted.embed(ids, images)), theirs) <= TOL


def test_image_token_count_must_match_features(tmp_path: Path) -> None:
    ours, _ = load_hf(save(mistral3_reference(), tmp_path))
    with pytest.raises(ValueError, match="image tokens"):
        ours.embed(torch.tensor([[1, 10, 10, 13]]), images_two_sizes())


def test_pixtral_llava_layout_matches_transformers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    text = transformers.MistralConfig(**TEXT, rope_theta=1e6, sliding_window=None)
    config = transformers.LlavaConfig(vision_config=vision_config(), text_config=text, image_token_index=10,
                                      projector_hidden_act="gelu", vision_feature_layer=-1,
                                      vision_feature_select_strategy="full", tie_word_embeddings=False)
    reference = transformers.LlavaForConditionalGeneration(config).eval()
    ours, _ = load_hf(save(reference, tmp_path))
    assert ours.patch_merger is None and ours.pre_mm_projector_norm is None
    image = images_two_sizes()[0]  # 16x24 px → 4x6 patches, no merging
    layout = ([10] * 6 + [12]) * 4
    layout[-1] = 13
    ids = torch.tensor([[1, 3, *layout, 42, 4]])
    with torch.no_grad():
        theirs = reference(input_ids=ids, pixel_values=image[None],
                           image_sizes=torch.tensor([list(image.shape[1:])])).logits
        assert max_diff(ours(None, embeddings=ours.embed(ids, [image])), theirs) <= TOL


def test_load_balancing_loss_matches_transformers(tmp_path: Path) -> None:
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    from magistral.model.moe import load_balancing_loss
    ours, _ = load_hf(save(text_reference("mixtral").eval(), tmp_path))
    with torch.no_grad():
        ours(random_ids(30))
    logits = [layer.feed_forward.router_logits for layer in ours.layers]
    expected = load_balancing_loss_func(tuple(logits), num_experts=4, top_k=2)
    assert torch.allclose(load_balancing_loss(logits, 4, 2), expected, atol=1e-6)


def test_patch_stem_and_absolute_positions_round_trip(tmp_path: Path) -> None:
    """magistral-mini's own encoder additions survive Mistral's format: params.json names them,
    the weights come back, the logits are the same; and they change what the encoder computes."""
    from magistral.config import tiny_vision_args
    from magistral.model.transformer import Transformer

    torch.manual_seed(0)
    args = tiny_vision_args()
    args.vision.patch_stem, args.vision.absolute_positions = True, 8
    ours = Transformer(args).eval()
    images = [torch.rand(3, 16, 24), torch.rand(3, 32, 8)]
    ids = torch.tensor([[1, 3, *(([10] * 3 + [12]) * 2)[:-1], 13, 50, *(([10] + [12]) * 4)[:-1], 13, 4]])
    folder = save_consolidated(ours, tmp_path / "mini")
    params = (folder / "params.json").read_text()
    assert '"patch_stem": true' in params and '"absolute_positions": 8' in params
    converted, _ = load_consolidated(folder)
    with torch.no_grad():
        mine = ours(None, embeddings=ours.embed(ids, images))
        assert max_diff(converted(None, embeddings=converted.embed(ids, images)), mine) == 0
        ours.vision_encoder.row_embedding.weight.add_(1.0)  # the rows' embeddings are read
        assert max_diff(ours(None, embeddings=ours.embed(ids, images)), mine) > 1e-3


def column_token_args():
    from magistral.config import tiny_vision_args

    args = tiny_vision_args()
    v = args.vision
    v.patch_stem, v.patch_stem_norm, v.absolute_positions = True, True, 8
    v.fixed_image_size, v.column_tokens, v.spatial_merge_size = (16, 32), True, 1
    return args


def test_column_tokens_one_per_patch_column_centred_and_round_trip(tmp_path: Path) -> None:
    """magistral-mini's layout: an image stretched to 16×32 px (4 px patches) becomes 8 tokens,
    one per patch column, whose mean is zero; params.json names the column merger, the fixed
    size and the stem's norm, and the converted model computes the same logits."""
    from magistral.model.transformer import Transformer

    torch.manual_seed(0)
    args = column_token_args()
    ours = Transformer(args).eval()
    images = [torch.rand(3, 16, 32), torch.rand(3, 16, 32)]
    with torch.no_grad():
        features = ours.image_features(images)
    assert features.shape == (16, args.dim)
    assert features.view(2, 8, -1).mean(1).abs().max() < 1e-5
    ids = torch.tensor([[1, 3, *[10] * 8, 13, 50, *[10] * 8, 13, 4]])
    folder = save_consolidated(ours, tmp_path / "mini")
    params = json.loads((folder / "params.json").read_text())["vision_encoder"]
    assert params["mm_projector_id"] == "column_merge" and params["fixed_image_size"] == [16, 32]
    assert params["patch_stem_norm"] is True
    converted, _ = load_consolidated(folder)
    assert converted.args.vision == args.vision
    with torch.no_grad():
        mine = ours(None, embeddings=ours.embed(ids, images))
        assert max_diff(converted(None, embeddings=converted.embed(ids, images)), mine) == 0
        # a column's content is read: change one column of pixels, that column's token changes most
        changed = images[0].clone()
        changed[:, :, 8:12] = 1.0 - changed[:, :, 8:12]
        moved = (ours.image_features([changed]) - features[:8]).norm(dim=-1)
        assert int(moved.argmax()) == 2


def test_column_merge_needs_a_fixed_image_size(tmp_path: Path) -> None:
    from magistral.model.checkpoints import args_from_params, params_from_args

    params = params_from_args(column_token_args())
    del params["vision_encoder"]["fixed_image_size"]
    with pytest.raises(ValueError, match="fixed_image_size"):
        args_from_params(params)
