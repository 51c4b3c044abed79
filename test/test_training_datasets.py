"""Datasets in their real layouts (fixtures generated here), label mapping, context scenes."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from training.datasets import (
    CITYSCAPES_CLASSES,
    CONTEXT_CLASSES,
    CityscapesSemantic,
    COCOPanopticSemantic,
    ContextScenes,
)
from training.datasets.context_scenes import CONTEXT_PAIRS
from training.transforms import sample_rng, train_augment


# ----------------------------------------------------------------------------- Cityscapes
def make_cityscapes(root, split="val", frames=(("aachen", 0, 19), ("bochum", 0, 1234)), h=32, w=64, seed=0,
                    label_ids=(0, 4, 7, 8, 9, 11, 17, 21, 23, 24, 26, 33)):
    """Write a tiny Cityscapes tree; returns [(image, labelIds)] per frame."""
    rng = np.random.default_rng(seed)
    out = []
    for city, seq, frame in frames:
        stem = f"{city}_{seq:06d}_{frame:06d}"
        img_dir = root / "leftImg8bit" / split / city
        gt_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ids = np.asarray(label_ids, np.uint8)[rng.integers(0, len(label_ids), (h // 8, w // 8))]
        ids = np.kron(ids, np.ones((8, 8), np.uint8))
        inst = ids.astype(np.uint16)           # 16-bit PNG like the real *_instanceIds.png
        inst[ids == 26] = 26 * 1000 + 1          # one car instance, as in the real instanceIds
        Image.fromarray(img).save(img_dir / f"{stem}_leftImg8bit.png")
        Image.fromarray(ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(inst).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
        out.append((img, ids))
    return out


def test_cityscapes_layout_and_train_id_mapping(tmp_path):
    raw = make_cityscapes(tmp_path)
    ds = CityscapesSemantic(str(tmp_path), "val")
    assert len(ds) == 2 and ds.class_names == CITYSCAPES_CLASSES
    assert CITYSCAPES_CLASSES[:3] == ["road", "sidewalk", "building"] and CITYSCAPES_CLASSES[-1] == "bicycle"
    img, lab = ds[0]
    np.testing.assert_array_equal(img, raw[0][0])
    ids = raw[0][1]
    expected = {0: 255, 4: 255, 7: 0, 8: 1, 9: 255, 11: 2, 17: 5, 21: 8, 23: 10, 24: 11, 26: 13, 33: 18}
    for label_id, train_id in expected.items():
        assert (ids == label_id).any(), f"fixture lacks label id {label_id}"
        assert set(np.unique(lab[ids == label_id])) == {train_id}, label_id
    assert ds.sample_id(1) == "bochum_000000_001234"


def test_cityscapes_missing_annotation_is_an_error(tmp_path):
    make_cityscapes(tmp_path)
    next((tmp_path / "gtFine" / "val" / "aachen").glob("*_labelIds.png")).unlink()
    with pytest.raises(FileNotFoundError, match="missing annotation"):
        CityscapesSemantic(str(tmp_path), "val")


# ----------------------------------------------------------------------------- COCO panoptic
COCO_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person", "isthing": 1},
    {"id": 3, "name": "car", "supercategory": "vehicle", "isthing": 1},
    {"id": 187, "name": "sky-other-merged", "supercategory": "sky", "isthing": 0},
]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], -1).astype(np.uint8)


def make_coco(root, split="val", year=2017, h=24, w=32):
    """COCO panoptic + instances in the official layout. Returns the expected semantic labels."""
    (root / f"{split}{year}").mkdir(parents=True)
    pan_dir = root / "annotations" / f"panoptic_{split}{year}"
    pan_dir.mkdir(parents=True)
    images, pan_anns, inst_anns, expected = [], [], [], []
    rng = np.random.default_rng(1)
    for image_id in (42, 7):
        name = f"{image_id:012d}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{split}{year}" / f"{name}.jpg")
        seg = np.zeros((h, w), np.int64)
        seg[:8] = 1000 + image_id          # sky (stuff)
        seg[10:20, 2:10] = 70000 + image_id  # car (thing), a segment id > 65535 uses the B channel
        seg[12:22, 20:26] = 300            # person
        seg[0:4, 28:32] = 55               # crowd person -> ignore
        Image.fromarray(id2rgb(seg)).save(pan_dir / f"{name}.png")
        segs = [
            {"id": 1000 + image_id, "category_id": 187, "iscrowd": 0},
            {"id": 70000 + image_id, "category_id": 3, "iscrowd": 0},
            {"id": 300, "category_id": 1, "iscrowd": 0},
            {"id": 55, "category_id": 1, "iscrowd": 1},
        ]
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": h, "width": w})
        pan_anns.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": segs})
        lab = np.full((h, w), 255, np.uint8)
        lab[seg == 1000 + image_id] = 2
        lab[seg == 70000 + image_id] = 1
        lab[seg == 300] = 0
        expected.append((image_id, lab))
        for sid, cat in ((70000 + image_id, 3), (300, 1)):
            ys, xs = np.nonzero(seg == sid)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            poly = [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]
            inst_anns.append({"id": len(inst_anns) + 1, "image_id": image_id, "category_id": cat,
                              "segmentation": [poly], "area": float((x1 - x0) * (y1 - y0)),
                              "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "iscrowd": 0})
    (root / "annotations" / f"panoptic_{split}{year}.json").write_text(json.dumps(
        {"images": images, "annotations": pan_anns, "categories": COCO_CATEGORIES}))
    (root / "annotations" / f"instances_{split}{year}.json").write_text(json.dumps(
        {"images": images, "annotations": inst_anns,
         "categories": [c for c in COCO_CATEGORIES if c["isthing"]]}))
    return sorted(expected)


def test_coco_panoptic_to_semantic(tmp_path):
    expected = make_coco(tmp_path)
    ds = COCOPanopticSemantic(str(tmp_path), "val")
    assert ds.class_names == ["person", "car", "sky-other-merged"]
    assert ds.contiguous_to_cat_id == [1, 3, 187] and ds.thing_classes == [0, 1]
    assert len(ds) == 2
    for i, (image_id, lab) in enumerate(expected):
        assert ds.image_id(i) == image_id
        img, got = ds[i]
        assert img.shape == (24, 32, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(got, lab)
    gt = ds.instance_gt()
    assert len(gt.getAnnIds()) == 4


# ----------------------------------------------------------------------------- context scenes
def test_context_scenes_deterministic_and_seeded():
    a, b = ContextScenes(6, 64, 128, seed=3), ContextScenes(6, 64, 128, seed=3)
    for i in range(6):
        ia, la = a[i]
        ib, lb = b[i]
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
        assert ia.shape == (64, 128, 3) and la.shape == (64, 128) and la.max() < len(CONTEXT_CLASSES)
    # the same index in reverse order gives the same sample (no hidden state)
    np.testing.assert_array_equal(a[5][0], ContextScenes(6, 64, 128, seed=3)[5][0])
    assert not np.array_equal(a[0][0], ContextScenes(6, 64, 128, seed=4)[0][0])
    w = ContextScenes(2, 40, 200, seed=0)[1][0]
    assert w.shape == (40, 200, 3)  # any size


def test_context_scenes_identical_looking_pair():
    """Forcing the scene type changes the ground and the vehicle *label*, never its pixels."""
    ds = ContextScenes(20, 96, 192, seed=0)
    car, boat, road, water = (CONTEXT_CLASSES.index(n) for n in ("car", "boat", "road", "water"))
    assert ("car", "boat") in CONTEXT_PAIRS
    checked = 0
    for i in range(20):
        st, hb = ds.generate(i, scene="street"), ds.generate(i, scene="harbour")
        veh = st.label == car
        np.testing.assert_array_equal(veh, hb.label == boat)
        if veh.any():
            checked += 1
            np.testing.assert_array_equal(st.image[veh], hb.image[veh])
        assert not (st.label == water).any() and not (hb.label == road).any()
        assert not (st.label == boat).any() and not (hb.label == car).any()
        # the shadow/wake under each vehicle (dark, labelled as the ground) is identical too
        dark = (st.image.max(-1) < 52) & (st.label == road)
        np.testing.assert_array_equal(st.image[dark], hb.image[dark])
        assert (hb.label[dark] == water).all()
        # everything outside the ground plane is unchanged
        above = st.label != road
        np.testing.assert_array_equal(st.image[above & (hb.label != water)], hb.image[above & (hb.label != water)])
    assert checked >= 15


def test_context_scenes_statistics_and_instances():
    ds = ContextScenes(60, 64, 128, seed=1)
    scenes = [ds.generate(i) for i in range(60)]
    kinds = {s.scene for s in scenes}
    assert kinds == {"street", "harbour"}
    counts = np.bincount(np.concatenate([s.label.ravel() for s in scenes]), minlength=len(CONTEXT_CLASSES))
    assert (counts > 0).all(), dict(zip(CONTEXT_CLASSES, counts))
    car, boat = CONTEXT_CLASSES.index("car"), CONTEXT_CLASSES.index("boat")
    car_px = np.concatenate([s.image[s.label == car] for s in scenes]).astype(float)
    boat_px = np.concatenate([s.image[s.label == boat] for s in scenes]).astype(float)
    # same appearance model: mean colours within a few grey levels of each other
    assert np.abs(car_px.mean(0) - boat_px.mean(0)).max() < 25
    s = scenes[0]
    assert len(s.instance_classes) == s.instance_map.max()
    for k, c in enumerate(s.instance_classes):
        assert (s.label[s.instance_map == k + 1] == c).all()


# sha256 of image, label and instance map of ContextScenes(8, 64, 128, seed=0), samples 0-7, street
# then harbour, computed with the generator as it was before it learnt depth (commit 54e8c96): the
# training data and the demo recording's images must not change when the generator gains geometry.
PIXELS_BEFORE_DEPTH_SHA256 = "976fd1bc33df7ac1381145be05bf197490e7048882ecf3cec24758508b98c004"


def test_context_scenes_pixels_unchanged_by_the_depth_model():
    ds = ContextScenes(8, 64, 128, seed=0)
    digest = hashlib.sha256()
    for i in range(8):
        for kind in ("street", "harbour"):
            s = ds.generate(i, scene=kind)
            for array in (s.image, s.label, s.instance_map):
                digest.update(array.tobytes())
    assert digest.hexdigest() == PIXELS_BEFORE_DEPTH_SHA256


def _ground_classes() -> list[int]:
    return [CONTEXT_CLASSES.index(n) for n in ("road", "water", "sidewalk")]


def test_context_scenes_ground_depth_back_projects_onto_the_plane():
    ds = ContextScenes(12, 96, 192, seed=5)
    for i in range(12):
        s = ds.generate(i)
        cam = s.camera
        assert s.depth.shape == s.label.shape and s.depth.dtype == np.float32
        assert (cam.width, cam.height) == (192, 96) and cam.fx == cam.fy
        assert (cam.cx, cam.cy) == ((192 - 1) / 2, (96 - 1) / 2)
        v, u = np.nonzero(np.isin(s.label, _ground_classes()))
        z = s.depth[v, u]
        assert np.isfinite(z).all() and (z > 0).all()
        above_ground = cam.back_project(u, v, z) @ cam.down  # distance below the camera
        np.testing.assert_allclose(above_ground, cam.mount_height_m, atol=1e-3)
        # the pinhole model: the camera matrix maps the points back to their pixels
        k = np.asarray(cam.k).reshape(3, 3)
        uvw = cam.back_project(u, v, z) @ k.T
        np.testing.assert_allclose(uvw[:, 0] / uvw[:, 2], u, atol=1e-3)
        assert np.isposinf(s.depth[s.label == CONTEXT_CLASSES.index("sky")]).all()
        # the skyline stands beyond all the ground
        skyline = np.isin(s.label, [CONTEXT_CLASSES.index(n) for n in ("building", "vegetation")])
        if skyline.any():
            assert s.depth[skyline].min() > 0 and np.isfinite(s.depth[skyline]).all()
        building = s.label == CONTEXT_CLASSES.index("building")
        if building.any():
            assert s.depth[building].min() > z.max()


def test_context_scenes_objects_stand_on_the_ground():
    """Every vehicle / person is one constant depth: the ground's depth at its bottom row (the
    bottom drawn row; a nearer object or its shadow may hide it, never lower it)."""
    ds = ContextScenes(20, 96, 192, seed=2)
    instances, at_visible_bottom = 0, 0
    for i in range(20):
        s = ds.generate(i)
        cam = s.camera
        for k in range(1, len(s.instance_classes) + 1):
            rows, cols = np.nonzero(s.instance_map == k)
            z = s.depth[rows, cols]
            assert (z == z[0]).all(), f"sample {i} instance {k}: not one depth"
            # the ground row at that depth (inverting z(v)), then its depth must be exactly z
            stands_on = int(round(cam.cy + cam.fy * (cam.mount_height_m / float(z[0]) - np.sin(cam.pitch_rad))
                                  / np.cos(cam.pitch_rad)))
            assert z[0] == np.float32(cam.ground_depth(stands_on)), f"sample {i} instance {k}"
            assert stands_on >= rows.max(), f"sample {i} instance {k} stands above its visible bottom"
            instances += 1
            at_visible_bottom += stands_on == rows.max()
    assert instances >= 30 and at_visible_bottom >= 0.8 * instances


def test_augment_is_seeded_and_keeps_sky_on_top():
    ds = ContextScenes(1, 64, 128, seed=0)
    img, lab = ds[0]
    sky = CONTEXT_CLASSES.index("sky")
    a = train_augment(img, lab, sample_rng(0, 1, 0), (48, 96))
    b = train_augment(img, lab, sample_rng(0, 1, 0), (48, 96))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for e in range(8):
        im2, lab2 = train_augment(img, lab, sample_rng(0, e, 0), (48, 96), scale_range=(1.0, 1.0))
        assert im2.shape == (48, 96, 3) and lab2.shape == (48, 96)
        rows = [np.mean(lab2[r] == sky) for r in range(48)]
        assert rows[0] >= rows[-1]  # never flipped vertically
        assert set(np.unique(lab2)) <= set(range(len(CONTEXT_CLASSES))) | {255}
