"""Weight import from timm: real timm models with random weights, saved to a file, imported
into the archspace presets, compared on logits; and every way an import must fail."""

from __future__ import annotations

import pickle
import time

import pytest
import torch
from _torchvision_standin import import_timm

import archspace
from archspace import create_model, load_spec
from archspace.weights import import_weights, read_checkpoint

TIMM = {  # timm model -> archspace preset
    "convnext_tiny": "convnext-t",
    "deit_small_patch16_224": "deit-s",
    "cait_xxs24_224": "cait-xxs24",
    "resnet50": "resnet-50",
    "coatnet_0_224": "coatnet-0-timm",
}
TOLERANCE = 1e-5  # fp32 logits
BATCH = 2


@pytest.fixture(scope="module")
def timm():
    return import_timm()


def randomise(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Make every tensor matter: timm initialises layer scales near 0, some norm gains to 0
    and running statistics to 0/1, which would hide mistakes in their mapping."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if t.ndim == 1 or key.endswith("gamma"):
                if key.endswith(("bias", "running_mean")):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
                else:
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif "pos" in key or "cls" in key or "table" in key:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model.eval()


def save(state: dict, path, fmt: str):
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def batch(size: int = 224) -> torch.Tensor:
    return torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def deit_file(timm, tmp_path_factory):
    """A random deit_small_patch16_224 saved as safetensors, and its state dict."""
    torch.manual_seed(0)
    model = randomise(timm.create_model("deit_small_patch16_224"))
    path = tmp_path_factory.mktemp("w") / "deit_small.safetensors"
    return save(model.state_dict(), path, "safetensors"), model


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_logits_equal_after_import(timm, tmp_path, name):
    """The preset with timm's weights computes timm's function: fp32 logits within 1e-5."""
    start = time.perf_counter()
    torch.manual_seed(0)
    reference = randomise(timm.create_model(name))
    fmt = "safetensors" if name in ("convnext_tiny", "coatnet_0_224") else "torch"
    path = save(reference.state_dict(), tmp_path / f"{name}.{'safetensors' if fmt == 'safetensors' else 'pth'}", fmt)
    model = create_model(TIMM[name], weights=path).eval()
    x = batch()
    with torch.no_grad():
        want, got = reference(x), model(x)
    assert got.shape == want.shape == (BATCH, 1000)
    assert want.abs().max() > 0.1  # a comparison of real numbers, not of zeros
    diff = (got - want).abs().max().item()
    assert diff <= TOLERANCE, f"{name}: max logit difference {diff:.3g}"
    print(f"{name}: max |logit difference| {diff:.3g} in {time.perf_counter() - start:.1f} s")


def test_deit_at_384_resamples_like_timm(timm, deit_file):
    """A 224 checkpoint in a 384 network: the position table is resampled once (bicubic),
    and the logits equal timm's own 384 model loaded through timm's resampling."""
    path, reference = deit_file
    from timm.models.vision_transformer import checkpoint_filter_fn

    timm384 = timm.create_model("deit_small_patch16_224", img_size=384).eval()
    timm384.load_state_dict(checkpoint_filter_fn(dict(reference.state_dict()), timm384))
    model = create_model("deit-s", size=384).eval()
    report = import_weights(model, path)
    assert any("position.pos: resampled bicubically from 14×14 to 24×24" in n for n in report.notes)
    x = batch(384)
    with torch.no_grad():
        diff = (model(x) - timm384(x)).abs().max().item()
    assert diff <= TOLERANCE, f"deit-s at 384: max logit difference {diff:.3g}"


def test_other_number_of_classes_reinitialises_the_head(deit_file):
    path, reference = deit_file
    model = create_model("deit-s", num_classes=10).eval()
    report = import_weights(model, path)
    assert report.notes == ["head.fc: the checkpoint classifies 1000 classes, the network 10: re-initialised"]
    x = batch()
    with torch.no_grad():
        want = reference.forward_head(reference.forward_features(x), pre_logits=True)
        got = model.forward_head(model.forward_features(x), pre_logits=True)
        assert model(x).shape == (BATCH, 10)
    assert (got - want).abs().max() <= TOLERANCE


def test_features_only_model_takes_weights(timm, deit_file):
    path, reference = deit_file
    features = create_model("deit-s", weights=path, features_only=True).eval()
    with torch.no_grad():
        (last,) = features(batch())
    assert last.shape == (BATCH, 384, 14, 14)
    assert features.feature_info == [{"num_chs": 384, "reduction": 16, "module": "stages.0"}]


def test_cli_build_with_weights(cli, deit_file):
    path, _ = deit_file
    r = cli("build", "deit-s", "--weights", path, "--from", "timm", "--set", "num_classes=10", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["weights"]["family"] == "vit"
    assert r.json()["weights"]["tensors"] == 150  # the classifier's two are left out
    assert r.err_lines == ["note: head.fc: the checkpoint classifies 1000 classes, the network 10: re-initialised"]


@pytest.mark.parametrize("change, line", [
    ("missing", "stages.0.blocks.3.mlp.fc2.bias: missing: no timm key of the checkpoint fills it"),
    ("extra", "blocks.12.norm1.weight: left over: no parameter of the network takes it"),
    ("shape", "blocks.0.attn.proj.weight: shape [384, 383] does not fit stages.0.blocks.0.attn.proj.weight of "
              "shape [384, 384]"),
])
def test_bad_checkpoint_exits_2_naming_the_key(cli, tmp_path, deit_file, change, line):
    _, reference = deit_file
    state = dict(reference.state_dict())
    if change == "missing":
        del state["blocks.3.mlp.fc2.bias"]
    elif change == "extra":
        state["blocks.12.norm1.weight"] = torch.ones(384)
    else:
        state["blocks.0.attn.proj.weight"] = torch.zeros(384, 383)
    path = save(state, tmp_path / "bad.pth", "torch")
    r = cli("build", "deit-s", "--weights", path)
    assert r.exit_code == 2
    assert r.exception is None and "Traceback" not in r.stderr
    assert r.err_lines == [line]


def test_another_family_fails_with_every_key_listed_but_bounded(cli, tmp_path, deit_file):
    _, reference = deit_file
    path = save(dict(reference.state_dict()), tmp_path / "deit.pth", "torch")
    r = cli("build", "convnext-t", "--weights", path)
    assert r.exit_code == 2
    assert len(r.err_lines) == 41 and r.err_lines[-1].startswith("--weights: ... and ")


class NotATensor:
    pass


def test_a_pickle_with_objects_is_refused(cli, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"stem.0.0.weight": NotATensor()}, path)
    r = cli("build", "deit-s", "--weights", path)
    assert r.exit_code == 2
    assert len(r.err_lines) == 1 and "refused (only weights are loaded)" in r.err_lines[0]
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    r = cli("build", "deit-s", "--weights", path)
    assert r.exit_code == 2 and len(r.err_lines) == 1


def test_unreadable_checkpoints_exit_2(cli, tmp_path):
    r = cli("build", "deit-s", "--weights", tmp_path / "nope.pth")
    assert r.exit_code == 2 and r.err_lines == [f"--weights: no file {tmp_path / 'nope.pth'}"]
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 20)
    r = cli("build", "deit-s", "--weights", junk)
    assert r.exit_code == 2 and len(r.err_lines) == 1 and "not a readable safetensors file" in r.err_lines[0]
    r = cli("build", "deit-s", "--weights", junk, "--from", "keras")
    assert r.exit_code == 2 and r.err_lines == ["--from: unknown weight source 'keras' (known: timm)"]


def test_wrapped_training_checkpoints_are_unwrapped(tmp_path):
    state = {"module.a": torch.zeros(2)}
    path = save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pth", "torch")
    assert list(read_checkpoint(path)) == ["a"]


def test_presets_without_a_timm_table_say_so():
    model = archspace.compile_network(load_spec("vit_c-1gf", size=32))
    with pytest.raises(archspace.SpecError, match="no timm weight table fits a conv stem with transformer"):
        import_weights(model, {"x": torch.zeros(1)})


def test_a_tensor_the_conversion_cannot_reshape_is_a_shape_problem(timm):
    state = dict(timm.create_model("coatnet_0_224").state_dict())
    state["stages.2.blocks.0.attn.qkv.weight"] = torch.zeros(1150, 192, 1, 1)  # not 3 × heads × head size
    with pytest.raises(archspace.SpecError) as exc:
        import_weights(create_model("coatnet-0-timm"), state)
    assert exc.value.lines() == ["stages.2.blocks.0.attn.qkv.weight: shape [1150, 192, 1, 1] does not fit "
                                 "stages.2.blocks.0.attn.qkv.weight of shape [1152, 192]"]
