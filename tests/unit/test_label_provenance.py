"""Label provenance (labeler, version, config hash, scene, model that chose the action) and `relabel`."""

import numpy as np
import pytest
from sample_factory import make_sample

from selfsup_perception.cli import relabel as relabel_cli
from selfsup_perception.core.dataset.provenance import config_hash, label_provenance
from selfsup_perception.core.dataset.sample_store import SampleStore
from selfsup_perception.core.labeling import FrameDifferenceConfig, FrameDifferenceLabeler

H, W = 48, 64


def pushed_sample(sample_id, seed, model_version="", scene_id=""):
    """A sample whose after image has a 12x12 block moved by 6 px next to the action pixel."""
    s = make_sample(sample_id, h=H, w=W, seed=seed)
    rgb = np.full((H, W, 3), 90, np.uint8)
    before, after = rgb.copy(), rgb.copy()
    before[10:22, 10:22] = (220, 40, 40)
    after[10:22, 16:28] = (220, 40, 40)
    s.before.rgb, s.after.rgb = before, after
    s.before.depth[:] = 0.8
    s.after.depth[:] = 0.8
    s.action_pixel = (12.0, 15.0)
    s.model_version, s.scene_id = model_version, scene_id
    return s


def test_config_hash_is_canonical_and_changes_with_any_setting():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    a = label_provenance(FrameDifferenceLabeler(), pushed_sample("x", 0))
    b = label_provenance(FrameDifferenceLabeler(FrameDifferenceConfig(min_area_px=5.0)), pushed_sample("x", 0))
    assert a["config_hash"] != b["config_hash"] and a["config"]["min_area_px"] == 100.0


def test_provenance_survives_the_store_and_the_sample_records_who_chose_the_action(tmp_path):
    store = SampleStore(tmp_path)
    sample = pushed_sample("s0", 0, model_version="instance_segmentation/v7", scene_id="train-3")
    store.write_sample(sample)
    back = store.read_sample("s0")
    assert (back.model_version, back.scene_id) == ("instance_segmentation/v7", "train-3")
    labeler = FrameDifferenceLabeler(FrameDifferenceConfig(min_area_px=5.0))
    label = labeler.label(back)
    label.provenance = label_provenance(labeler, back)
    store.write_label("s0", label)
    prov = store.read_label("s0", "frame_difference").provenance
    assert prov["labeler"] == "frame_difference" and prov["labeler_version"] == "1"
    assert prov["sample_id"] == "s0" and prov["scene_id"] == "train-3"
    assert prov["model_version"] == "instance_segmentation/v7" and len(prov["config_hash"]) == 16
    assert prov["config_hash"] == config_hash(prov["config"])


def test_a_label_split_follows_its_scene(tmp_path):
    from selfsup_perception.core.learning.training.online import split_key
    from selfsup_perception.core.types import MaskLabel

    label = MaskLabel(np.zeros((2, 2), bool), False, True, provenance={"scene_id": "train-3"})
    assert split_key("a", label) == split_key("b", label) == "scene:train-3"  # pushes of one scene: one side
    assert split_key("a", MaskLabel(np.zeros((2, 2), bool), False, True)) == "a"
    assert split_key("a", label, split_by="sample") == "a"  # the steadier, scene-leaking alternative


def test_relabel_keeps_old_labels_beside_the_new(tmp_path, capsys):
    store = SampleStore(tmp_path)
    old_labeler = FrameDifferenceLabeler(FrameDifferenceConfig(max_area_fraction=0.01))  # discards the moved block
    for i in range(3):
        s = pushed_sample(f"s{i}", i, scene_id="train-0")
        store.write_sample(s)
        label = old_labeler.label(s)
        label.provenance = label_provenance(old_labeler, s)
        store.write_label(s.sample_id, label)
    old = {i: store.read_label(f"s{i}", "frame_difference") for i in range(3)}
    assert not any(label.kept for label in old.values())
    rc = relabel_cli.main([str(tmp_path), "--labeler", "frame_difference", "--set", "max_area_fraction=0.05"])
    out = capsys.readouterr().out
    assert rc == 0 and "relabeled 3 samples" in out
    archives = sorted((tmp_path / "labels").glob("frame_difference.prev-*"))
    assert len(archives) == 1
    kept_old = SampleStore(tmp_path)
    for i in range(3):
        archived = kept_old.read_label(f"s{i}", archives[0].name)
        assert np.array_equal(archived.mask, old[i].mask) and archived.provenance == old[i].provenance
        new = store.read_label(f"s{i}", "frame_difference")
        assert new.provenance["config_hash"] != old[i].provenance["config_hash"]
        assert new.provenance["relabeled_from"]["config_hash"] == old[i].provenance["config_hash"]
        assert new.provenance["relabeled_from"]["kept"] == old[i].kept
        assert new.provenance["scene_id"] == "train-0"
        assert new.kept and new.mask[15, 12]  # the newer labeler keeps the moved block
    assert "3 labels changed" in out and "after:  3 kept" in out


def test_relabel_refuses_bad_settings_clearly(tmp_path, capsys):
    SampleStore(tmp_path)
    assert relabel_cli.main([str(tmp_path), "--labeler", "frame_difference", "--set", "nonsense=1"]) == 2
    assert "expected KEY=VALUE with KEY one of" in capsys.readouterr().err
    assert relabel_cli.main([str(tmp_path / "missing")]) == 2
    assert "not a sample store" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown labeler"):
        relabel_cli.make_labeler("magic")
