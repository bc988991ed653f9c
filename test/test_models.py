"""Behaviour of the MiT encoder, SegFormer head and shared-encoder multimodal segmentor."""

from __future__ import annotations

import pytest
import torch

from robustseg_core.evaluation import ConfusionMatrix

from robustseg_core.classes import MODALITIES, NUM_CLASSES
from robustseg_core.models import (
    MODEL_PRESETS,
    MultimodalSegmentor,
    apply_missing_convention,
    build_mit,
    build_segmentor,
)
from robustseg_core.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

IMAGE_SIZE = 64
NUM_MODALITIES = len(MODALITIES)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.fixture(scope="module")
def cpu_model() -> MultimodalSegmentor:
    torch.manual_seed(0)
    return build_segmentor("mit_cpu", embed_dim=64).eval()


def random_images(batch: int, size: int = IMAGE_SIZE, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, NUM_MODALITIES, 3, size, size, generator=generator)


def presence(*rows: str) -> torch.Tensor:
    """presence("1010", "1111") -> bool [2, 4], one character per modality."""
    return torch.tensor([[char == "1" for char in row] for row in rows], dtype=torch.bool)


# --- fusion with presence masks ---------------------------------------------------------------


@torch.no_grad()
def test_dropped_modality_input_does_not_change_logits(cpu_model):
    images = random_images(2)
    present = presence("1010", "0110")
    reference = cpu_model(images, present)
    changed = images.clone()
    changed[0, 1] = 100.0
    changed[0, 3] = torch.randn_like(changed[0, 3])
    changed[1, 0] = -7.0
    assert torch.equal(cpu_model(changed, present), reference)


@torch.no_grad()
def test_zero_convention_equals_passing_zeros_explicitly(cpu_model):
    images = random_images(2)
    keep = presence("1001", "0100")
    zero_images, zero_present = apply_missing_convention(images, keep, "zero")
    assert zero_present.all()
    explicit = images.clone()
    explicit[~keep] = 0.0
    all_present = torch.ones_like(keep)
    torch.testing.assert_close(
        cpu_model(zero_images, zero_present), cpu_model(explicit, all_present)
    )
    # Zeros are encoded and averaged in, so the result differs from leaving the modalities out.
    assert not torch.allclose(cpu_model(zero_images, zero_present), cpu_model(images, keep))


def test_drop_convention_returns_inputs_unchanged():
    images = random_images(1)
    keep = presence("0011")
    dropped_images, dropped_present = apply_missing_convention(images, keep, "drop")
    assert dropped_images is images and dropped_present is keep


def test_unknown_missing_convention_is_rejected():
    with pytest.raises(ValueError, match="convention"):
        apply_missing_convention(random_images(1), presence("1111"), "mean")


@torch.no_grad()
def test_sample_output_does_not_depend_on_other_samples(cpu_model):
    first = random_images(1, seed=2)
    with_neighbour_a = torch.cat([first, random_images(1, seed=3)])
    with_neighbour_b = torch.cat([first, random_images(1, seed=4)])
    logits_a = cpu_model(with_neighbour_a, presence("1100", "1111"))
    logits_b = cpu_model(with_neighbour_b, presence("1100", "0001"))
    torch.testing.assert_close(logits_a[0], logits_b[0], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_mixed_presence_batch_equals_each_sample_alone(cpu_model):
    images = random_images(4)
    present = presence("1111", "1000", "0101", "0010")
    batched = cpu_model.forward_features(images, present)
    for sample in range(4):
        single = slice(sample, sample + 1)
        alone = cpu_model.forward_features(images[single], present[single])
        torch.testing.assert_close(batched.logits[sample], alone.logits[0], atol=1e-5, rtol=1e-4)
        for stage in range(4):
            torch.testing.assert_close(
                batched.features[stage][sample], alone.features[stage][0], atol=1e-5, rtol=1e-4
            )


@torch.no_grad()
def test_fused_features_are_masked_mean_of_present_modalities(cpu_model):
    images = random_images(2)
    present = presence("1011", "0100")
    output = cpu_model.forward_features(images, present)
    for per_modality, fused in zip(output.features, output.fused):
        assert torch.all(per_modality[~present] == 0)
        weights = present[:, :, None, None, None].float()
        expected = (per_modality * weights).sum(1) / weights.sum(1)
        torch.testing.assert_close(fused, expected)
    torch.testing.assert_close(output.logits, cpu_model(images, present))


def test_training_step_reaches_encoder_and_head():
    torch.manual_seed(0)
    model = build_segmentor("mit_cpu", embed_dim=32).train()
    images = random_images(2, size=32)
    logits = model(images, presence("1000", "0111"))
    logits.logsumexp(dim=1).mean().backward()
    assert model.encoder.patch_embed1.proj.weight.grad.abs().sum() > 0
    assert model.head.classifier.weight.grad.abs().sum() > 0


# --- parameter counts -------------------------------------------------------------------------


@pytest.mark.parametrize("preset, expected", [("mit_b0", 3_319_392), ("mit_b2", 24_196_288)])
def test_encoder_parameter_count(preset, expected):
    assert count_parameters(build_mit(preset)) == expected


def test_b0_segmentor_with_768_head_has_6_10_million_parameters():
    total = count_parameters(build_segmentor("mit_b0", NUM_CLASSES, 768))
    assert abs(total - 6.10e6) <= 0.005 * 6.10e6


# --- strict loading of official SegFormer ImageNet key names ----------------------------------


def official_mit_b0_shapes() -> dict[str, tuple[int, ...]]:
    """Key names and shapes of the official SegFormer ``mit_b0.pth``, from its naming rules."""
    dims, depths, sr_ratios, mlp_ratio = (32, 64, 160, 256), (2, 2, 2, 2), (8, 4, 2, 1), 4
    shapes: dict[str, tuple[int, ...]] = {}
    in_channels = 3
    for stage, (dim, depth, sr_ratio) in enumerate(zip(dims, depths, sr_ratios), start=1):
        kernel = 7 if stage == 1 else 3
        shapes[f"patch_embed{stage}.proj.weight"] = (dim, in_channels, kernel, kernel)
        shapes[f"patch_embed{stage}.proj.bias"] = (dim,)
        shapes[f"patch_embed{stage}.norm.weight"] = (dim,)
        shapes[f"patch_embed{stage}.norm.bias"] = (dim,)
        hidden = dim * mlp_ratio
        for index in range(depth):
            block = f"block{stage}.{index}"
            shapes.update(
                {
                    f"{block}.norm1.weight": (dim,),
                    f"{block}.norm1.bias": (dim,),
                    f"{block}.attn.q.weight": (dim, dim),
                    f"{block}.attn.q.bias": (dim,),
                    f"{block}.attn.kv.weight": (2 * dim, dim),
                    f"{block}.attn.kv.bias": (2 * dim,),
                    f"{block}.attn.proj.weight": (dim, dim),
                    f"{block}.attn.proj.bias": (dim,),
                    f"{block}.norm2.weight": (dim,),
                    f"{block}.norm2.bias": (dim,),
                    f"{block}.mlp.fc1.weight": (hidden, dim),
                    f"{block}.mlp.fc1.bias": (hidden,),
                    f"{block}.mlp.dwconv.dwconv.weight": (hidden, 1, 3, 3),
                    f"{block}.mlp.dwconv.dwconv.bias": (hidden,),
                    f"{block}.mlp.fc2.weight": (dim, hidden),
                    f"{block}.mlp.fc2.bias": (dim,),
                }
            )
            if sr_ratio > 1:
                shapes[f"{block}.attn.sr.weight"] = (dim, dim, sr_ratio, sr_ratio)
                shapes[f"{block}.attn.sr.bias"] = (dim,)
                shapes[f"{block}.attn.norm.weight"] = (dim,)
                shapes[f"{block}.attn.norm.bias"] = (dim,)
        shapes[f"norm{stage}.weight"] = (dim,)
        shapes[f"norm{stage}.bias"] = (dim,)
        in_channels = dim
    shapes["head.weight"] = (1000, dims[-1])
    shapes["head.bias"] = (1000,)
    return shapes


def official_checkpoint(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}


def test_official_key_list_is_consistent_with_published_shapes():
    shapes = official_mit_b0_shapes()
    assert shapes["patch_embed1.proj.weight"] == (32, 3, 7, 7)
    assert shapes["block1.0.attn.sr.weight"] == (32, 32, 8, 8)
    assert shapes["block1.0.attn.kv.weight"] == (64, 32)
    assert shapes["block1.0.mlp.dwconv.dwconv.weight"] == (128, 1, 3, 3)
    encoder_total = sum(
        torch.Size(shape).numel() for key, shape in shapes.items() if not key.startswith("head.")
    )
    assert encoder_total == 3_319_392


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_official_checkpoint_loads_strictly(tmp_path, wrapper):
    checkpoint = official_checkpoint(official_mit_b0_shapes())
    path = tmp_path / "mit_b0.pth"
    torch.save(checkpoint if wrapper is None else {wrapper: checkpoint}, path)
    model = build_segmentor("mit_b0", pretrained=path)
    encoder_state = model.encoder.state_dict()
    assert set(encoder_state) == set(checkpoint) - {"head.weight", "head.bias"}
    for key in ("block1.0.attn.sr.weight", "block4.1.mlp.fc2.weight", "norm4.bias"):
        assert torch.equal(encoder_state[key], checkpoint[key])


def test_checkpoint_with_renamed_key_names_the_key(tmp_path):
    checkpoint = official_checkpoint(official_mit_b0_shapes())
    checkpoint["block2.1.attn.qkv.weight"] = checkpoint.pop("block2.1.attn.q.weight")
    path = tmp_path / "renamed.pth"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError) as error:
        build_segmentor("mit_b0", pretrained=path)
    message = str(error.value)
    assert "block2.1.attn.q.weight" in message and "block2.1.attn.qkv.weight" in message
    assert str(path) in message


def test_checkpoint_with_wrong_shape_names_the_key(tmp_path):
    shapes = official_mit_b0_shapes()
    shapes["block3.0.attn.kv.weight"] = (320, 64)
    path = tmp_path / "wrong_shape.pth"
    torch.save(official_checkpoint(shapes), path)
    with pytest.raises(ValueError, match=r"block3\.0\.attn\.kv\.weight"):
        build_segmentor("mit_b0", pretrained=path)


def test_corrupted_checkpoint_error_names_the_file(tmp_path):
    path = tmp_path / "truncated.pth"
    torch.save(official_checkpoint(official_mit_b0_shapes()), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"truncated.pth.*\(not the zip archive torch.save writes, or cut short\)"):
        build_segmentor("mit_b0", pretrained=path)


def flip_middle_bytes(path, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of a file, as a bad disk sector or a broken copy does."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(255 - byte for byte in data[middle:middle + count])
    path.write_bytes(bytes(data))


def test_a_checkpoint_with_flipped_bytes_is_refused_not_loaded_as_wrong_weights(tmp_path):
    """torch.load does not check the archive's CRC-32s: flipped weight bytes loaded silently, as wrong weights."""
    encoder = tmp_path / "flipped.pth"
    torch.save(official_checkpoint(official_mit_b0_shapes()), encoder)
    flip_middle_bytes(encoder)
    with pytest.raises(ValueError, match=r"flipped.pth: the file is damaged \(.* does not match its CRC-32"):
        build_segmentor("mit_b0", pretrained=encoder)
    checkpoint = tmp_path / "student.pt"
    model = build_segmentor("mit_cpu", embed_dim=32)
    save_checkpoint(checkpoint, {"model": model.state_dict(), "architecture": model.architecture})
    load_checkpoint(checkpoint)
    unchecked = tmp_path / "without_checksums.pt"
    torch.serialization.set_crc32_options(False)
    try:  # a file written without checksums (CRC 0) cannot be checked: it loads
        torch.save({"model": model.state_dict(), "architecture": model.architecture}, unchecked)
    finally:
        torch.serialization.set_crc32_options(True)
    load_checkpoint(unchecked)
    flip_middle_bytes(checkpoint)
    with pytest.raises(CheckpointError, match=r"student.pt: a damaged checkpoint \(.* does not match its CRC-32"):
        load_checkpoint(checkpoint)


def test_missing_checkpoint_error_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        build_segmentor("mit_cpu", pretrained=tmp_path / "absent.pth")


# --- shapes, presets and input validation -----------------------------------------------------


@pytest.mark.parametrize("preset", MODEL_PRESETS)
@torch.no_grad()
def test_output_shape_for_each_preset(preset):
    torch.manual_seed(0)
    model = build_segmentor(preset, embed_dim=256).eval()
    logits = model(random_images(2), presence("1111", "0010"))
    assert logits.shape == (2, NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.isfinite(logits).all()


@torch.no_grad()
def test_forward_features_shapes():
    model = build_segmentor("mit_b0", embed_dim=256).eval()
    output = model.forward_features(random_images(2, size=96), presence("1100", "0001"))
    assert output.logits.shape == (2, NUM_CLASSES, 96, 96)
    for stage, (channels, stride) in enumerate(zip((32, 64, 160, 256), (4, 8, 16, 32))):
        side = 96 // stride
        assert output.features[stage].shape == (2, NUM_MODALITIES, channels, side, side)
        assert output.fused[stage].shape == (2, channels, side, side)


@torch.no_grad()
def test_input_size_not_multiple_of_32_gives_logits_at_input_size(cpu_model):
    logits = cpu_model(random_images(1, size=70), presence("1111"))
    assert logits.shape == (1, NUM_CLASSES, 70, 70)


@pytest.mark.parametrize(
    "images, present, match",
    [
        (torch.zeros(2, 4, 3, 32, 32), presence("1100", "0000"), "no modality"),
        (torch.zeros(2, 3, 3, 32, 32), presence("110", "001"), "modalities"),
        (torch.zeros(2, 4, 1, 32, 32), presence("1100", "0011"), "3 channels"),
        (torch.zeros(4, 3, 32, 32), presence("1100", "0011"), "images"),
        (torch.zeros(2, 4, 3, 32, 32), presence("1100", "0011").int(), "bool"),
        (torch.zeros(2, 4, 3, 32, 32), presence("1100"), "present must have shape"),
        (torch.zeros(2, 4, 3, 32, 32, dtype=torch.uint8), presence("1100", "0011"), "float"),
    ],
)
def test_bad_inputs_raise_clear_errors(cpu_model, images, present, match):
    with pytest.raises(ValueError, match=match):
        cpu_model(images, present)


def test_unknown_preset_lists_known_presets():
    with pytest.raises(ValueError, match="mit_b0.*mit_cpu"):
        build_segmentor("mit_b7")


def test_architecture_dict_rebuilds_the_same_model():
    model = build_segmentor("mit_cpu", num_classes=7, embed_dim=32, modalities=("rgb", "depth"))
    architecture = model.architecture
    assert architecture == {
        "preset": "mit_cpu",
        "num_classes": 7,
        "embed_dim": 32,
        "num_modalities": 2,
        "modalities": ["rgb", "depth"],
        "drop_path_rate": 0.1,
    }
    arguments = {key: value for key, value in architecture.items() if key != "num_modalities"}
    rebuilt = build_segmentor(**arguments)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.architecture == architecture


@pytest.mark.parametrize("convention", ["drop", "zero"])
def test_encode_once_evaluation_matches_the_forward_for_every_combination(convention):
    from robustseg_core.evaluation import COMBINATIONS, combination_mask, evaluate_combinations
    from robustseg_core.models import apply_missing_convention, build_segmentor

    torch.manual_seed(0)
    model = build_segmentor("mit_cpu", embed_dim=32).eval()
    images = torch.randn(2, 4, 3, 64, 64)
    labels = torch.randint(0, 25, (2, 64, 64))
    matrices = evaluate_combinations(model, [{"images": images, "label": labels}], torch.device("cpu"),
                                     COMBINATIONS, [convention])[convention]
    for name in COMBINATIONS:
        keep = combination_mask(name).expand(2, -1)
        with torch.inference_mode():
            prediction = model(*apply_missing_convention(images, keep, convention)).argmax(1)
        expected = ConfusionMatrix(25)
        expected.update(prediction, labels)
        assert torch.equal(matrices[name].matrix, expected.matrix), name
