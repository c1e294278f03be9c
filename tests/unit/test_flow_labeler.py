"""Flow and frame-difference labelers on synthetic top-down scenes with known motions (320x240)."""

import dataclasses

import cv2
import numpy as np
import pytest

from selfsup_perception.core.labeling import (
    ClusterConfig,
    FlowLabelerConfig,
    FlowMaskLabeler,
    FrameDifferenceLabeler,
    cluster_flow,
    compute_flow,
    resolution_scale,
)
from selfsup_perception.core.labeling.ego_motion import EgoMotionConfig
from selfsup_perception.core.types import CameraIntrinsics, InteractionKind, InteractionSample, RgbdFrame

H, W = 240, 320
K = CameraIntrinsics(fx=300.0, fy=300.0, cx=(W - 1) / 2, cy=(H - 1) / 2, width=W, height=H)
T_WC = np.eye(4)
T_WC[:3, :3] = np.diag([1.0, -1.0, -1.0])  # looking straight down from 1 m
T_WC[:3, 3] = [0.5, 0.0, 1.0]


def _texture(seed: int, shape=(H, W), blur=2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.uniform(0, 255, shape + (3,)).astype(np.float32), (0, 0), blur)
    t = (t - t.min()) / (t.max() - t.min()) * 200 + 25
    return t.astype(np.uint8)


def _render(objects, table_seed=0):
    """objects: list of (texture, mask) with texture (H, W, 3) already placed; returns rgb, depth."""
    rgb = _texture(table_seed)
    depth = np.ones((H, W), np.float32)
    for tex, mask in objects:
        rgb[mask] = tex[mask]
        depth[mask] = 0.95  # 5 cm above the table
    return rgb, depth


def _square(u0, v0, size):
    m = np.zeros((H, W), bool)
    m[v0:v0 + size, u0:u0 + size] = True
    return m


def _shift(img, du, dv):
    m = np.float32([[1, 0, du], [0, 1, dv]])
    interp = cv2.INTER_NEAREST if img.dtype == bool else cv2.INTER_LINEAR
    out = cv2.warpAffine(img.astype(np.uint8) if img.dtype == bool else img, m, (W, H), flags=interp)
    return out.astype(bool) if img.dtype == bool else out


def _rotate(img, center, angle_deg):
    m = cv2.getRotationMatrix2D(center, angle_deg, 1.0)
    interp = cv2.INTER_NEAREST if img.dtype == bool else cv2.INTER_LINEAR
    out = cv2.warpAffine(img.astype(np.uint8) if img.dtype == bool else img, m, (W, H), flags=interp)
    return out.astype(bool) if img.dtype == bool else out


def _frame(rgb, depth):
    return RgbdFrame(rgb=rgb, depth=depth, intrinsics=K, camera_to_world=T_WC)


def _sample(before_objs, after_objs, action_pixel):
    b = _frame(*_render(before_objs))
    a = _frame(*_render(after_objs))
    return InteractionSample("t", InteractionKind.PUSH, b, a, action_pixel, (0, 0, 0), (0, 0, 0))


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _moving_square(u0=140, v0=100, size=36, du=7, dv=3, seed=1):
    tex = _texture(seed)
    m0 = _square(u0, v0, size)
    return (tex, m0), (_shift(tex, du, dv), _shift(m0, du, dv)), m0


def test_translated_square_gives_its_before_mask():
    before, after, gt = _moving_square()
    label = FlowMaskLabeler().label(_sample([before], [after], (158.0, 118.0)))
    assert label.kept and not label.is_negative, label.reason
    assert _iou(label.mask, gt) > 0.85
    assert label.labeler == "flow"
    # mean flow inside is the known shift (7, 3) -> 7.6 px
    assert abs(label.stats["mask_mean_flow"] - np.hypot(7, 3)) < 1.0
    # small against the rotation filter (15 px x 0.5); the boundary pixels kept by the end-point
    # tolerance carry DIS's smoothed flow
    assert label.stats["flow_std"] < 1.5
    exact = FlowMaskLabeler(FlowLabelerConfig(end_point_tolerance_px=0.0)).label(
        _sample([before], [after], (158.0, 118.0)))
    assert exact.kept and exact.stats["flow_std"] < 1.0 and _iou(exact.mask, gt) > 0.85


def test_two_moving_objects_keep_the_one_under_the_push_pixel():
    b1, a1, gt1 = _moving_square(60, 60, 34, du=6, dv=0, seed=1)
    b2, a2, gt2 = _moving_square(200, 140, 34, du=0, dv=-6, seed=2)
    sample = _sample([b1, b2], [a1, a2], (215.0, 155.0))
    label = FlowMaskLabeler().label(sample)
    assert label.kept, label.reason
    assert _iou(label.mask, gt2) > 0.85
    assert not (label.mask & gt1).any()
    # push pixel slightly off the object (background): the Gaussian prior still finds object 2
    off = dataclasses.replace(sample, action_pixel=(198.0, 138.0))
    label_off = FlowMaskLabeler().label(off)
    assert label_off.kept and _iou(label_off.mask, gt2) > 0.85


def test_touching_objects_moving_differently_are_separated_by_the_cut():
    # Flow field only: two adjacent regions with opposite motions form two segments.
    flow = np.zeros((H, W, 2), np.float32)
    left, right = _square(100, 80, 40), _square(140, 80, 40)
    flow[left] = (8.0, 0.0)
    flow[right] = (0.0, -8.0)
    labels = cluster_flow(flow, left | right, ClusterConfig())
    assert len(np.unique(labels[left])) == 1 and len(np.unique(labels[right])) == 1
    assert labels[left][0] != labels[right][0] and labels[left][0] > 0
    assert (labels[~(left | right)] == 0).all()
    comp = cluster_flow(flow, left | right, ClusterConfig(method="components"))
    assert len(np.unique(comp[left | right])) == 1  # components cannot separate them


def test_no_motion_is_a_negative_example():
    before, _, _ = _moving_square()
    label = FlowMaskLabeler().label(_sample([before], [before], (158.0, 118.0)))
    assert label.is_negative and label.kept
    assert not label.mask.any()
    fd = FrameDifferenceLabeler().label(_sample([before], [before], (158.0, 118.0)))
    assert fd.is_negative and fd.kept and not fd.mask.any()


def test_motion_the_flow_misses_is_not_trusted_as_a_negative():
    # A plain object jumps far: pass a zero flow (what DIS reports there); its depth changed.
    plain = np.full((H, W, 3), 90, np.uint8)
    m0 = _square(140, 100, 36)
    sample = _sample([(plain, m0)], [(plain, _shift(m0, 60, 0))], (158.0, 118.0))
    no_fallback = FlowMaskLabeler(FlowLabelerConfig(depth_fallback=False))
    label = no_fallback.label(sample, flow=np.zeros((H, W, 2), np.float32))
    assert not label.kept and not label.is_negative
    assert "not trusted as a negative" in label.reason and label.stats["changed_near_action"] > 0.3
    # the depth fallback labels it: the object left all of its pixels, its before region is the mask
    label = FlowMaskLabeler().label(sample, flow=np.zeros((H, W, 2), np.float32))
    assert label.kept and not label.is_negative and label.stats["source"] == "depth", label.reason
    assert _iou(label.mask, m0) > 0.9 and label.stats["vacated_fraction"] > 0.9
    # a push of half its size leaves too little of it vacated to trust the depth alone
    half = _sample([(plain, m0)], [(plain, _shift(m0, 12, 0))], (158.0, 118.0))
    assert not FlowMaskLabeler().label(half, flow=np.zeros((H, W, 2), np.float32)).kept
    # the same zero flow on unchanged images stays a negative
    still = _sample([(plain, m0)], [(plain, m0)], (158.0, 118.0))
    label = FlowMaskLabeler().label(still, flow=np.zeros((H, W, 2), np.float32))
    assert label.is_negative and label.kept and label.stats["changed_near_action"] == 0.0
    assert label.stats["source"] == "flow"


def test_texture_moving_on_the_table_is_filtered_out():
    # A patch of table texture (no height: a sheet of paper / a shadow) moves: no object label.
    tex = _texture(5)
    m0 = _square(140, 100, 36)
    b_rgb, depth = _render([])
    a_rgb = b_rgb.copy()
    b_rgb[m0] = tex[m0]
    a_rgb[_shift(m0, 7, 3)] = _shift(tex, 7, 3)[_shift(m0, 7, 3)]
    s = InteractionSample("t", InteractionKind.PUSH, _frame(b_rgb, depth), _frame(a_rgb, depth.copy()),
                          (158.0, 118.0), (0, 0, 0), (0, 0, 0))
    label = FlowMaskLabeler().label(s)
    assert label.is_negative and not label.mask.any()
    # the flow itself sees the motion: it is the table filter that removes it
    assert compute_flow(b_rgb, a_rgb)[118, 158, 0] > 5.0


def _rigid_flow(mask, center, angle_deg, shift):
    """Exact flow of a rigid motion (rotation about ``center`` then ``shift``) on ``mask`` pixels."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    th = np.radians(angle_deg)
    x, y = u - center[0], v - center[1]
    du = np.cos(th) * x - np.sin(th) * y - x + shift[0]
    dv = np.sin(th) * x + np.cos(th) * y - y + shift[1]
    flow = np.stack([du, dv], axis=-1).astype(np.float32)
    flow[~mask] = 0.0
    return flow


def test_rotation_filter():
    # Given exact flow (so the test checks the filter, not DIS): a 25 deg rotation of a 40 px square
    # about a point 40 px below its centre: |flow| = 2 r sin(12.5 deg), r in ~[20, 63] px, all moving.
    # The after image shows a translation, not this rotation: the flow check (min_flow_match) would rightly
    # discard the rotation's mask, so it is off where the rotation must be kept.
    cfg = FlowLabelerConfig(max_flow_std_px=30.0, max_mean_flow_px=100.0, min_flow_match=0.0)
    tex, m0 = _texture(3), _square(140, 100, 40)
    _, after, _ = _moving_square(140, 100, 40, du=6, dv=0, seed=3)
    sample = _sample([(tex, m0)], [after], (160.0, 120.0))
    rot = _rigid_flow(m0, (159.5, 159.5), 25.0, (0.0, 0.0))
    mag = np.hypot(rot[..., 0], rot[..., 1])[m0]
    expected_std = float(mag.std())
    assert expected_std > 2.0
    # threshold 0.8 std (x 0.5 for 320x240)
    strict = FlowMaskLabeler(FlowLabelerConfig(max_flow_std_px=1.6 * expected_std, max_mean_flow_px=100.0))
    label = strict.label(sample, flow=rot)
    assert not label.kept and "rotation" in label.reason
    assert abs(label.stats["flow_std"] - expected_std) < 0.2 * expected_std  # std over (most of) the object
    # the same object translated: std 0 -> kept with the same threshold
    trans = strict.label(sample, flow=_rigid_flow(m0, (159.5, 159.5), 0.0, (6.0, 0.0)))
    assert trans.kept and trans.stats["flow_std"] < 0.1 and _iou(trans.mask, m0) > 0.9
    # A loose threshold keeps the rotation.
    assert FlowMaskLabeler(cfg).label(sample, flow=rot).kept
    # ... unless the flow check finds that this flow does not explain the images
    checked = FlowMaskLabeler(dataclasses.replace(cfg, min_flow_match=0.7)).label(sample, flow=rot)
    assert not checked.kept and "flow does not explain the mask" in checked.reason
    with pytest.raises(ValueError, match="flow must be"):
        strict.label(sample, flow=np.zeros((10, 10, 2), np.float32))


def test_large_motion_filter():
    # The whole view shifts by 12 px (camera moved): mean flow 12 px > 7 * 0.5 px.
    before, after, _ = _moving_square()
    b_rgb, b_depth = _render([before])
    a_rgb, a_depth = _shift(b_rgb, 12, 0), _shift(b_depth, 12, 0)
    a_depth[:, :12] = 1.0
    s = InteractionSample("t", InteractionKind.PUSH, _frame(b_rgb, b_depth), _frame(a_rgb, a_depth),
                          (158.0, 118.0), (0, 0, 0), (0, 0, 0))
    # With ego-motion compensation the shift is recognised as the camera's: too large to trust.
    label = FlowMaskLabeler().label(s)
    assert not label.kept and "large camera motion" in label.reason and label.stats["ego_motion"] == "homography"
    assert abs(label.stats["ego_motion_px"] - 12.0) < 1.0
    # Without it, the reference's large-motion filter catches it.
    label = FlowMaskLabeler(FlowLabelerConfig(ego_motion=EgoMotionConfig(enabled=False))).label(s)
    assert not label.kept and "large motion" in label.reason
    assert label.stats["mean_flow"] > 7.0 * resolution_scale((H, W))


def test_area_filters_scale_with_resolution():
    before, after, gt = _moving_square(100, 60, 70, du=8, dv=0)  # 4900 px > 2.5% of 76800 = 1920
    label = FlowMaskLabeler().label(_sample([before], [after], (135.0, 95.0)))
    assert not label.kept and "too large" in label.reason
    assert _iou(label.mask, gt) > 0.8  # the discarded candidate is still reported
    relaxed = FlowMaskLabeler(FlowLabelerConfig(max_area_fraction=0.1)).label(
        _sample([before], [after], (135.0, 95.0)))
    assert relaxed.kept


def test_frame_difference_gives_union_of_old_and_new():
    before, after, gt = _moving_square(du=10, dv=0)
    union = gt | _shift(gt, 10, 0)
    label = FrameDifferenceLabeler().label(_sample([before], [after], (158.0, 118.0)))
    assert label.kept and label.labeler == "frame_difference"
    assert _iou(label.mask, union) > 0.75
    assert _iou(label.mask, gt) < 0.7  # worse than flow against the before mask, by construction


def test_bad_data_gives_a_skipped_label_with_the_reason_and_bad_inputs_raise():
    before, after, _ = _moving_square()
    good = _sample([before], [after], (158.0, 118.0))
    for labeler in (FlowMaskLabeler(), FrameDifferenceLabeler()):
        # Data conditions: a label that says why the sample was skipped, never an exception.
        no_depth = dataclasses.replace(good, before=dataclasses.replace(good.before, depth=None))
        nan_depth = dataclasses.replace(
            good, after=dataclasses.replace(good.after, depth=np.full((H, W), np.nan, np.float32)))
        zero_depth = dataclasses.replace(
            good, before=dataclasses.replace(good.before, depth=np.zeros((H, W), np.float32)))
        mm_depth = dataclasses.replace(good, before=dataclasses.replace(good.before, depth=good.before.depth * 1000))
        for bad, reason in ((no_depth, "has no depth image"), (nan_depth, "no valid pixel"),
                            (zero_depth, "no valid pixel"), (mm_depth, "looks like millimetres")):
            label = labeler.label(bad)
            assert not label.kept and not label.is_negative and label.stats["skipped"]
            assert label.reason.startswith("skipped: ") and reason in label.reason, label.reason
            assert label.mask.shape == (H, W) and not label.mask.any()
        # Malformed inputs are programming errors.
        small = _frame(good.after.rgb[:200], good.after.depth[:200])
        with pytest.raises(ValueError, match="differ in size"):
            labeler.label(dataclasses.replace(good, after=small))
        bad_depth = dataclasses.replace(good.before, depth=good.before.depth[:, :100])
        with pytest.raises(ValueError, match="does not match"):
            labeler.label(dataclasses.replace(good, before=bad_depth))
        with pytest.raises(ValueError, match="not finite"):
            labeler.label(dataclasses.replace(good, action_pixel=(np.nan, 3.0)))


def test_fast_region_adjacency_graph_equals_scikit_image():
    from skimage import graph
    from skimage.segmentation import slic

    from selfsup_perception.core.labeling.flow_clustering import rag_mean_color

    img = _texture(5, shape=(60, 80), blur=1.0)
    mask = np.zeros((60, 80), bool)
    mask[10:50, 5:70] = True
    sp = slic(img, n_segments=40, compactness=30, mask=mask, start_label=1, channel_axis=-1)
    ref = graph.rag_mean_color(img, sp, mode="similarity")
    ref.remove_node(0)
    fast = rag_mean_color(img, sp)
    assert sorted(ref.nodes) == sorted(fast.nodes) and len(ref.nodes) > 10
    assert set(map(frozenset, ref.edges)) == set(map(frozenset, fast.edges))
    for a, b in ref.edges:
        assert fast.edges[a, b]["weight"] == pytest.approx(ref.edges[a, b]["weight"], abs=1e-12)
        assert np.allclose(fast.nodes[a]["mean color"], ref.nodes[a]["mean color"])


def test_fill_height_holes_takes_the_lowest_valid_neighbour():
    from selfsup_perception.core.labeling.flow_labeler import fill_height_holes

    height = np.zeros((40, 40), np.float32)
    height[10:30, 10:30] = 0.05  # an object 5 cm above the table
    holes = height.copy()
    rng = np.random.default_rng(0)
    holes[rng.uniform(size=holes.shape) < 0.8] = np.nan  # 80 % missing, as on a dark surface
    holes[:, 0:3] = np.nan
    filled = fill_height_holes(holes, 3)
    # inside the object: the object's height; next to its edge: the table (the lowest neighbour)
    assert np.allclose(filled[13:27, 13:27], 0.05)
    assert np.all(filled[:, 7] == 0.0) and np.all(filled[12:28, 31] == 0.0)
    # a hole wider than the window stays unknown
    wide = height.copy()
    wide[:, 15:25] = np.nan
    assert np.isnan(fill_height_holes(wide, 3)[20, 20])


def test_an_object_with_holes_in_its_depth_is_labelled_whole():
    # The moved square's depth is missing on 70 % of its pixels and along its outline, as on a dark object
    # seen by a stereo camera; the flow sees it move. The label must still be the whole square.
    before, after, m0 = _moving_square()
    sample = _sample([before], [after], (158.0, 118.0))
    rng = np.random.default_rng(1)
    for frame, mask in ((sample.before, m0), (sample.after, after[1])):
        ring = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        frame.depth[(mask & (rng.uniform(size=mask.shape) < 0.7)) | ring] = np.nan
    label = FlowMaskLabeler().label(sample)
    assert label.kept and not label.is_negative, label.reason
    assert _iou(label.mask, m0) > 0.85, _iou(label.mask, m0)
    # without hole filling and completion most of the object is lost to the table filter
    bare = FlowMaskLabeler(FlowLabelerConfig(hole_fill_px=0, completion_px=0)).label(sample)
    assert not (bare.kept and _iou(bare.mask, m0) > 0.85)


def test_completion_adds_what_moved_with_the_mask_and_not_the_table():
    from selfsup_perception.core.labeling.flow_labeler import complete_mask

    before, after, m0 = _moving_square()
    b_rgb, _ = _render([before])
    a_rgb, _ = _render([after])
    flow = np.zeros((H, W, 2), np.float32)
    flow[m0] = (7.0, 3.0)
    core = cv2.erode(m0.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)  # 3 px lost at the border
    grown = complete_mask(core, b_rgb, a_rgb, flow, None, steps=4, margin=30.0, max_error=60.0)
    assert _iou(core, m0) < 0.7
    assert _iou(grown, m0) > 0.85 and (grown & ~m0).sum() < 0.05 * m0.sum(), (_iou(grown, m0), (grown & ~m0).sum())
    # a flow that is not the object's adds nothing
    assert (complete_mask(core, b_rgb, a_rgb, -flow, None, 4, 30.0, 60.0) == core).mean() > 0.99


def test_normalized_cut_equals_scikit_image():
    from skimage import graph
    from skimage.segmentation import slic

    from selfsup_perception.core.labeling.flow_clustering import normalized_cut, rag_mean_color

    for seed in range(3):
        img = _texture(seed, shape=(60, 80), blur=2.0)
        mask = np.zeros((60, 80), bool)
        mask[8:52, 4:72] = True
        sp = slic(img, n_segments=60, compactness=30, mask=mask, start_label=1, channel_axis=-1)
        ref = graph.cut_normalized(sp, rag_mean_color(img, sp), thresh=0.001, num_cuts=10,
                                   rng=np.random.default_rng(0))
        fast = normalized_cut(sp, img, 0.001, 10, np.random.default_rng(0))
        assert len(np.unique(ref[mask])) > 1  # the cut did split
        np.testing.assert_array_equal(fast, ref)


def test_depth_jumps_ignore_holes_inside_an_object_but_not_between_objects():
    from selfsup_perception.core.labeling.flow_labeler import depth_jumps

    depth = np.ones((40, 60), np.float32)
    depth[10:30, 5:25] = 0.95  # object A, 5 cm up
    depth[10:30, 27:50] = 0.90  # object B, 10 cm up, 2 px right of A
    depth[10:30, 25:27] = np.nan  # the stereo shadow between them
    holed = depth.copy()
    holed[10:30, 14:16] = np.nan  # a line of holes across A (a dark band)
    jumps = depth_jumps(holed, 0.015)
    # A stays one piece: its hole line is no jump (within hole_px of A's outline the hole takes the table's
    # depth, so the line's two ends still are)
    assert not jumps[14:26, 8:22].any()
    # A and B (5 cm apart in depth) are cut apart along their shadow
    assert jumps[10:30, 26].all() and jumps[10:30, 27].all()
    assert jumps[9, 6:24].all()  # A's outline on the table
    # the old rule (every hole a jump) cut A in two
    old = np.where(np.isfinite(holed), holed, 0).astype(np.float32)
    k = np.ones((3, 3), np.uint8)
    assert ((cv2.dilate(old, k) - cv2.erode(old, k)) > 0.015)[12:28, 14:16].all()
    # a wide hole is no jump anywhere inside it; an all-missing image has none
    wide = depth.copy()
    wide[:, 30:45] = np.nan
    assert not depth_jumps(wide, 0.015)[:, 35:40].any()
    assert not depth_jumps(np.full((8, 8), np.nan, np.float32), 0.015).any()


def test_the_depth_fallback_labels_an_object_crossed_by_a_line_of_holes_whole():
    # A plain object pushed far (zero flow, as DIS reports); its depth is missing along a line across it,
    # as along a dark band or a shiny ridge of a realistic-world mesh. The label is the whole object.
    plain = np.full((H, W, 3), 90, np.uint8)
    m0 = _square(140, 100, 36)
    sample = _sample([(plain, m0)], [(plain, _shift(m0, 60, 0))], (150.0, 110.0))
    sample.before.depth[100:136, 157:160] = np.nan
    label = FlowMaskLabeler().label(sample, flow=np.zeros((H, W, 2), np.float32))
    assert label.kept and label.stats["source"] == "depth", label.reason
    assert _iou(label.mask, m0) > 0.9, _iou(label.mask, m0)
    # two objects side by side at different heights, a hole line between them: only the pushed one
    other = _square(178, 100, 30)
    rgb, depth = _render([(plain, m0)])
    depth[other] = 0.90
    depth[100:136, 176:178] = np.nan
    after_rgb, after_depth = _render([(plain, _shift(m0, 0, 70))])
    after_depth[other] = 0.90
    two = InteractionSample("t", InteractionKind.PUSH, _frame(rgb, depth), _frame(after_rgb, after_depth),
                            (150.0, 110.0), (0, 0, 0), (0, 0, 0))
    label = FlowMaskLabeler().label(two, flow=np.zeros((H, W, 2), np.float32))
    assert label.kept and label.stats["source"] == "depth", label.reason
    assert _iou(label.mask, m0) > 0.9 and not (label.mask & other).any()


def test_the_pushed_object_is_the_moved_one_under_or_nearest_the_action_pixel():
    from selfsup_perception.core.labeling.quality import pushed_instance

    inst = np.zeros((40, 60), np.uint16)
    inst[5:15, 5:15] = 1
    inst[5:15, 20:30] = 2
    inst[25:35, 40:50] = 3
    # under the action pixel and moved: that object, however far others moved
    assert pushed_instance(inst, [1, 3], (8.0, 8.0)) == (1, 0.0)
    # under the action pixel but it did not move (a chain: it pushed another): the nearest moved one
    i, d = pushed_instance(inst, [1, 3], (22.0, 10.0))
    assert i == 1 and d == pytest.approx(8.0)
    # on the table between objects: the nearest moved one
    assert pushed_instance(inst, [2, 3], (38.0, 30.0))[0] == 3
    # nothing moved, or the moved object is out of view
    assert pushed_instance(inst, [], (8.0, 8.0)) == (0, float("inf"))
    assert pushed_instance(inst, [7], (8.0, 8.0)) == (0, float("inf"))


def test_a_moving_segment_on_a_neighbour_is_not_the_pushed_object():
    # The pushed object A (plain) jumps far: DIS sees nothing on it (zero flow). Its textured neighbour B, 4 px
    # away, slid 6 px (a chain, or a flow artefact at its edge). The Gaussian search around the action pixel
    # (on A) finds B's segment; the object check sees that it covers none of A and the depth fallback labels A.
    plain = np.full((H, W, 3), 90, np.uint8)
    a0 = _square(140, 100, 36)
    b_tex = _texture(5, blur=1.0)
    b0 = _square(180, 100, 24)
    sample = _sample([(plain, a0), (b_tex, b0)], [(plain, _shift(a0, 0, 70)), (_shift(b_tex, 6, 0), _shift(b0, 6, 0))],
                     (174.0, 118.0))
    flow = np.zeros((H, W, 2), np.float32)
    flow[b0] = (6.0, 0.0)
    unchecked = FlowMaskLabeler(FlowLabelerConfig(min_object_cover=0.0)).label(sample, flow=flow)
    assert unchecked.kept and _iou(unchecked.mask, b0) > 0.8, unchecked.reason  # the neighbour, wrongly
    label = FlowMaskLabeler().label(sample, flow=flow)
    assert label.kept and label.stats["source"] == "depth", label.reason
    assert label.stats["object_cover"] == 0.0 and _iou(label.mask, a0) > 0.9
    # without the depth fallback the interaction is discarded with the reason
    alone = FlowMaskLabeler(FlowLabelerConfig(depth_fallback=False)).label(sample, flow=flow)
    assert not alone.kept and "not the object at the action pixel" in alone.reason
    # a segment that is the object at the action pixel passes the check
    before, after, gt = _moving_square()
    ok = FlowMaskLabeler().label(_sample([before], [after], (158.0, 118.0)))
    assert ok.kept and ok.stats["source"] == "flow" and ok.stats["object_cover"] > 0.9


def test_the_depth_fallback_joins_the_parts_of_an_object_across_a_wide_depth_fold():
    # A two-part object (a body 5 cm and a head 8 cm high) pushed far (zero flow); stereo depth is missing
    # along the fold between them, so the depth-jump band there is wider than 2 px. Both parts left the
    # pixels they covered: the label is the whole object, not the part under the action pixel.
    from selfsup_perception.core.labeling.flow_labeler import vacated_object

    plain = np.full((H, W, 3), 90, np.uint8)
    body, head = _square(140, 100, 24), np.zeros((H, W), bool)
    head[100:124, 164:180] = True
    whole = body | head
    rgb, depth = _render([(plain, whole)])
    depth[head] = 0.92
    depth[100:124, 163:166] = np.nan  # the fold
    after_rgb, after_depth = _render([(plain, _shift(whole, 0, 90))])
    sample = InteractionSample("t", InteractionKind.PUSH, _frame(rgb, depth), _frame(after_rgb, after_depth),
                               (150.0, 110.0), (0, 0, 0), (0, 0, 0))
    label = FlowMaskLabeler().label(sample, flow=np.zeros((H, W, 2), np.float32))
    assert label.kept and label.stats["source"] == "depth", label.reason
    assert _iou(label.mask, whole) > 0.9, _iou(label.mask, whole)
    # a 2 px gap (the earlier rule) keeps the body only
    height = (1.0 - depth).astype(np.float32)
    height_after = (1.0 - after_depth).astype(np.float32)
    narrow, _ = vacated_object(height, height_after, depth, (150.0, 110.0), 0.01, 0.015, 10, 0.6, merge_gap_px=2)
    assert _iou(narrow, body) > 0.9 and not (narrow & head).any()


def test_a_static_plain_piece_the_flow_smeared_into_leaves_the_mask():
    # The pushed object A (textured, 5 cm) slides 6 px; a plain dark box D (10 cm, in front of it) does not
    # move, but DIS smears A's motion over D's textureless face, so the moving segment is A + D. D's colour is
    # still where it was in the after image: it leaves the mask.
    a_tex, d_rgb = _texture(3), np.full((H, W, 3), 25, np.uint8)
    a0, d0 = _square(140, 100, 36), _square(176, 100, 30)
    rgb, depth = _render([(a_tex, a0), (d_rgb, d0)])
    depth[d0] = 0.90
    a1 = _shift(a0, 6, 0) & ~d0
    after_rgb, after_depth = _render([(_shift(a_tex, 6, 0), a1), (d_rgb, d0)])
    after_depth[d0] = 0.90
    sample = InteractionSample("t", InteractionKind.PUSH, _frame(rgb, depth), _frame(after_rgb, after_depth),
                               (150.0, 118.0), (0, 0, 0), (0, 0, 0))
    flow = np.zeros((H, W, 2), np.float32)
    flow[a0 | d0] = (6.0, 0.0)
    smeared = FlowMaskLabeler(FlowLabelerConfig(max_static_fraction=1.0)).label(sample, flow=flow)
    assert (smeared.mask & d0).sum() > 0.8 * d0.sum(), smeared.reason  # D joined, wrongly
    label = FlowMaskLabeler().label(sample, flow=flow)
    assert label.kept and label.stats["source"] == "flow", label.reason
    assert _iou(label.mask, a0) > 0.85 and (label.mask & d0).sum() < 0.05 * d0.sum(), _iou(label.mask, a0)
    assert label.stats["static_px"] > 0.8 * d0.sum()
    with pytest.raises(ValueError, match="max_static_fraction"):
        FlowLabelerConfig(max_static_fraction=0.0)


def test_the_piece_at_the_action_pixel_is_never_taken_for_static():
    # A plain object (its body 5 cm high, a textured top part 8 cm high beside it) pushed 8 px, less than its
    # size: most of the body's colours are still where they were, but it is what was pushed, so it stays.
    from selfsup_perception.core.labeling.flow_labeler import without_static_pieces

    plain, top_tex = np.full((H, W, 3), 90, np.uint8), _texture(4)
    body, top = _square(140, 100, 36), np.zeros((H, W), bool)
    top[100:136, 176:188] = True
    rgb, depth = _render([(plain, body), (top_tex, top)])
    depth[top] = 0.92
    after_rgb, after_depth = _render([(plain, _shift(body, 8, 0)), (_shift(top_tex, 8, 0), _shift(top, 8, 0))])
    after_depth[_shift(top, 8, 0)] = 0.92
    sample = InteractionSample("t", InteractionKind.PUSH, _frame(rgb, depth), _frame(after_rgb, after_depth),
                               (150.0, 118.0), (0, 0, 0), (0, 0, 0))
    flow = np.zeros((H, W, 2), np.float32)
    flow[body | top] = (8.0, 0.0)
    label = FlowMaskLabeler().label(sample, flow=flow)
    assert label.kept and label.stats["source"] == "flow", label.reason
    assert _iou(label.mask, body | top) > 0.9 and label.stats["static_px"] == 0, label.stats
    # judged like any other piece (an action pixel elsewhere), the body would have looked static
    _, removed = without_static_pieces(body | top, sample.before, after_rgb, None, (0.0, 0.0), 0.015, 30.0, 0.5, 8)
    assert removed > 0.8 * body.sum()
