"""The timm-shaped Python API: create_model, list_models, and the model interface
(num_features, forward_features, forward_head, forward_intermediates, reset_classifier,
features_only)."""

from __future__ import annotations

import pytest
import torch

import archspace
from archspace import FeatureNetwork, Network, SpecError, compile_network, create_model, list_models, load_spec

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_list_models_filters_presets_by_pattern():
    names = list_models("coatnet-0*")
    assert names == sorted(names)
    assert {"coatnet-0", "coatnet-0-timm", "coatnet-0-dwstride"} <= set(names)
    assert "coatnet-1" not in names
    assert set(list_models()) >= {"convnext-t", "deit-s", "resnet-50", "cait-xxs24"}
    assert list_models("no-such-*") == []


@pytest.mark.parametrize("source", ["name", "path", "mapping", "spec"])
def test_create_model_takes_a_name_path_mapping_or_spec(tmp_path, source):
    from archspace.graph import resolve_defaults
    from archspace.spec import dump_spec, preset_index

    spec = resolve_defaults(load_spec("convnext-t", size=32))
    given = {
        "name": "convnext-t",
        "path": preset_index()["convnext-t"],
        "mapping": {"extends": "convnext-t"},
        "spec": load_spec("convnext-t"),
    }[source]
    model = create_model(given, size=32, num_classes=7)
    assert isinstance(model, Network)
    assert model.spec.num_classes == 7 and model.spec.input.size == 32
    assert dump_spec(model.spec).replace("num_classes: 7", "num_classes: 1000") == dump_spec(spec)


def test_create_model_overrides_paths_fields_and_timm_names():
    model = create_model("deit-s", size=32, drop_path_rate=0.05, in_chans=1, head={"dropout": 0.1},
                         **{"stages[0].depth": 2})
    s = model.spec
    assert s.drop_path.rate == 0.05 and s.input.channels == 1 and s.head.dropout == 0.1
    assert s.head.pool == "cls"  # a mapping sets only its keys
    assert s.stages[0].depth == 2 and len(model.stages[0].blocks) == 2
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 1000)


def test_create_model_bad_input_is_a_spec_error():
    with pytest.raises(SpecError, match="unknown preset 'convnext-q'"):
        create_model("convnext-q")
    with pytest.raises(SpecError) as exc:
        create_model("deit-s", **{"stages[0].depht": 2}, head={"pool": "max"})
    assert exc.value.lines() == ["stages[0].depht: unknown key (not part of the spec language)",
                                 "head.pool: input should be 'avg' or 'cls' (got 'max')"]
    with pytest.raises(SpecError) as exc:
        create_model("deit-s", **{"stages[9].depth": 1, "stages[0": 1})
    assert [p.path for p in exc.value.problems] == ["stages[0"]


def test_compile_network_takes_a_plain_name_or_fails_clearly():
    assert isinstance(compile_network("resnet-50"), Network)
    with pytest.raises(SpecError, match="unknown preset 'coatnet-9'"):
        compile_network("coatnet-9")
    with pytest.raises(TypeError, match="not int"):
        compile_network(3)


@pytest.mark.parametrize("name", ["convnext-t", "coatnet-0", "deit-s", "cait-xxs24", "resnet-50"])
def test_forward_features_then_head_is_forward(name):
    model = create_model(name, size=32).eval()
    with torch.no_grad():
        feats = model.forward_features(X)
        logits = model(X)
        assert torch.equal(model.forward_head(feats), logits)
        pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.head_hidden_size)
    if model.num_prefix_tokens:  # timm's ViT layout: (N, class tokens + patches, C)
        assert feats.shape == (2, 1 + (32 // 16) ** 2, model.num_features)
    else:  # the final map
        assert feats.ndim == 4 and feats.shape[1] == model.num_features == model.feature_info[-1]["num_chs"]


def test_forward_intermediates_and_features_only():
    model = create_model("coatnet-0", size=64).eval()
    with torch.no_grad():
        final, maps = model.forward_intermediates(X.repeat(1, 1, 2, 2))
        only = model.forward_intermediates(X.repeat(1, 1, 2, 2), indices=2, intermediates_only=True)
        assert torch.equal(final, model.forward_features(X.repeat(1, 1, 2, 2)))
    assert [m.shape[1:] for m in maps] == [(96, 16, 16), (192, 8, 8), (384, 4, 4), (768, 2, 2)]
    assert [m.shape[1] for m in only] == [384, 768]
    features = create_model("coatnet-0", size=64, features_only=True, out_indices=(0, -1)).eval()
    assert isinstance(features, FeatureNetwork)
    assert [f["num_chs"] for f in features.feature_info] == [96, 768]
    with torch.no_grad():
        assert [t.shape[1] for t in features(X.repeat(1, 1, 2, 2))] == [96, 768]
    with pytest.raises(ValueError, match="out of range"):
        create_model("coatnet-0", size=64, features_only=True, out_indices=(4,))


def test_reset_classifier():
    model = create_model("coatnet-0", size=32)
    assert model.num_features == 768 and model.head_hidden_size == 768
    model.reset_classifier(10)
    assert model(X).shape == (2, 10) and model.spec.num_classes == 10 and model.num_classes == 10
    assert model.get_classifier().weight.shape == (10, 768)
    model.reset_classifier(0)
    assert model(X).shape == (2, 768)


def test_weights_module_is_public():
    assert callable(archspace.weights.import_weights)
