"""Datasets in their real layouts (fixtures generated here), label mapping, context scenes."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from training.config import DataConfig
from training.datasets import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    CONTEXT_CLASSES,
    ADE20KSceneParsing,
    BDD100KSemantic,
    CityscapesSemantic,
    COCOPanopticSemantic,
    ContextScenes,
    MapillaryVistasSemantic,
    build_dataset,
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


# ----------------------------------------------------------------------------- ADE20K / BDD100K / Vistas
def _write_jpeg(path, h, w, seed, grey=False):
    """A JPEG with a red left half and a blue right half (channel order shows) plus mild noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2, 0] = 220
    img[:, w // 2:, 2] = 220
    img = np.clip(img.astype(int) + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if grey:
        img = np.repeat(img[..., :1], 3, axis=-1)
    Image.fromarray(img[..., 0] if grey else img).save(path, quality=95)
    return img


def _write_label_png(path, ids, palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    label = Image.fromarray(np.asarray(ids, np.uint8))
    if palette is not None:  # Vistas: a palette PNG whose indices are the label ids
        label = label.convert("P")
        label.putpalette([c for rgb in palette for c in rgb])
    label.save(path)


def _label_blocks(values, h, w, seed):
    """(h, w) uint8 ids in 8x8 blocks, every value present at least once."""
    rng = np.random.default_rng(seed)
    cells = np.resize(np.asarray(values, np.uint8), (h // 8) * (w // 8))
    rng.shuffle(cells)
    return np.kron(cells.reshape(h // 8, w // 8), np.ones((8, 8), np.uint8))


def make_ade20k(root, split="validation", count=2, h=64, w=96):
    """ADEChallengeData2016 layout; returns [(rgb written, annotation values)]. Values 0 (other),
    1, 2, 77 (boat), 150 (flag) and 151 (outside the 150 classes)."""
    prefix = "ADE_train" if split == "training" else "ADE_val"
    out = []
    for i in range(1, count + 1):
        stem = f"{prefix}_{i:08d}"
        img = _write_jpeg(root / "images" / split / f"{stem}.jpg", h, w, i, grey=(i == 2))
        ids = _label_blocks([0, 1, 2, 77, 150, 151], h, w, i)
        _write_label_png(root / "annotations" / split / f"{stem}.png", ids)
        out.append((img, ids))
    return out


def make_bdd100k(root, split="val", count=2, h=72, w=128):
    """images/10k + labels/sem_seg/masks layout; returns [(rgb written, mask values)] (train ids 0..18,
    255, and 40 -- not a train id)."""
    out = []
    for i in range(count):
        name = f"{7 + i:08x}-{0xabc0 + i:08x}"
        img = _write_jpeg(root / "images" / "10k" / split / f"{name}.jpg", h, w, i)
        ids = _label_blocks([*range(19), 255, 40], h, w, i)
        _write_label_png(root / "labels" / "sem_seg" / "masks" / split / f"{name}.png", ids)
        out.append((img, ids))
    return out


# A few labels of each Vistas config, with their real fields (v2.0 gives two labels one readable
# name, as its lane-marking labels do: the loader must keep the classes apart).
VISTAS_LABELS = {
    "v1.2": [
        {"color": [165, 42, 42], "instances": True, "readable": "Bird", "name": "animal--bird", "evaluate": True},
        {"color": [128, 64, 128], "instances": False, "readable": "Road", "name": "construction--flat--road",
         "evaluate": True},
        {"color": [70, 130, 180], "instances": False, "readable": "Sky", "name": "nature--sky", "evaluate": True},
        {"color": [0, 0, 142], "instances": True, "readable": "Car", "name": "object--vehicle--car", "evaluate": True},
        {"color": [0, 0, 0], "instances": False, "readable": "Unlabeled", "name": "void--unlabeled",
         "evaluate": False},
    ],
    "v2.0": [
        {"color": [128, 64, 128], "instances": False, "readable": "Road", "name": "construction--flat--road",
         "evaluate": True},
        {"color": [32, 32, 32], "instances": False, "readable": "Car Mount", "name": "void--car-mount",
         "evaluate": False},
        {"color": [255, 255, 255], "instances": False, "readable": "Lane Marking - Crosswalk",
         "name": "marking--discrete--crosswalk-zebra", "evaluate": True},
        {"color": [255, 255, 255], "instances": False, "readable": "Lane Marking - Crosswalk",
         "name": "marking-only--discrete--crosswalk-zebra", "evaluate": True},
        {"color": [0, 0, 142], "instances": True, "readable": "Car", "name": "object--vehicle--car", "evaluate": True},
        {"color": [0, 0, 0], "instances": False, "readable": "Unlabeled", "name": "void--unlabeled",
         "evaluate": False},
    ],
}


def make_vistas(root, split="validation", count=2, h=64, w=128):
    """Both versions' configs and label folders beside one image folder; returns
    {version: [(rgb written, label ids)]} (ids include one past the label list)."""
    root.mkdir(parents=True, exist_ok=True)
    for version, labels in VISTAS_LABELS.items():
        (root / f"config_{version}.json").write_text(json.dumps({"labels": labels, "version": version}))
    out = {version: [] for version in VISTAS_LABELS}
    for i in range(count):
        key = f"{'abcdefghijklmnopqrstuv'[i]}{i:021d}"
        img = _write_jpeg(root / split / "images" / f"{key}.jpg", h, w, i)
        for version, labels in VISTAS_LABELS.items():
            ids = _label_blocks(range(len(labels) + 1), h, w, i)
            _write_label_png(root / split / version / "labels" / f"{key}.png", ids, [l["color"] for l in labels])
            out[version].append((img, ids))
    return out


def _assert_reads(ds, raw, lut_expected):
    """The loader's image is the file's pixels (PIL's decode; near what was written, RGB order) and
    its label the annotation through exactly `lut_expected` {annotation value: train id}."""
    assert len(ds) == len(raw)
    for i, (written, ids) in enumerate(raw):
        img, lab = ds[i]
        assert img.dtype == np.uint8 and img.shape == written.shape and lab.dtype == np.uint8
        with Image.open(ds.pairs[i][0]) as f:
            np.testing.assert_array_equal(img, np.asarray(f.convert("RGB")))
        if written.ndim == 3 and not (written[..., 0] == written[..., 1]).all():
            assert np.abs(img.astype(int) - written).mean() < 10  # red stays red, blue blue (a swap: ~110)
        assert set(np.unique(ids)) == set(lut_expected)
        for value, train_id in lut_expected.items():
            assert set(np.unique(lab[ids == value])) == {train_id}, (value, train_id)


def test_ade20k_layout_and_reduce_zero_label(tmp_path):
    raw = make_ade20k(tmp_path)
    ds = ADE20KSceneParsing(str(tmp_path), "val")
    assert ds.class_names == ADE20K_CLASSES and len(ADE20K_CLASSES) == 150
    assert ADE20K_CLASSES[:3] == ["wall", "building", "sky"] and ADE20K_CLASSES[76] == "boat"
    assert ADE20K_CLASSES[-1] == "flag" and ADE20K_CLASSES[12] == "person"
    _assert_reads(ds, raw, {0: 255, 1: 0, 2: 1, 77: 76, 150: 149, 151: 255})
    img, _ = ds[1]  # a greyscale JPEG (ADE20K has some) comes out as RGB
    assert img.shape[2] == 3 and (img[..., 0] == img[..., 2]).all()
    assert ds.sample_id(0) == "ADE_val_00000001"


def test_bdd100k_layout_and_train_ids(tmp_path):
    raw = make_bdd100k(tmp_path)
    ds = BDD100KSemantic(str(tmp_path), "val")
    assert ds.class_names == CITYSCAPES_CLASSES
    _assert_reads(ds, raw, {**{i: i for i in range(19)}, 255: 255, 40: 255})


@pytest.mark.parametrize("version, names, lut", [
    ("v1.2", ["Bird", "Road", "Sky", "Car"], {0: 0, 1: 1, 2: 2, 3: 3, 4: 255, 5: 255}),
    ("v2.0", ["Road", "marking--discrete--crosswalk-zebra", "marking-only--discrete--crosswalk-zebra", "Car"],
     {0: 0, 1: 255, 2: 1, 3: 2, 4: 3, 5: 255, 6: 255}),
])
def test_mapillary_vistas_config_classes_and_ignored_labels(tmp_path, version, names, lut):
    raw = make_vistas(tmp_path)
    ds = MapillaryVistasSemantic(str(tmp_path), "val", version=version)
    assert ds.class_names == names
    assert ds.ignored_labels == [l["name"] for l in VISTAS_LABELS[version] if not l["evaluate"]]
    assert [VISTAS_LABELS[version][i]["name"] for i in ds.label_ids][-1] == "object--vehicle--car"
    _assert_reads(ds, raw[version], lut)
    with Image.open(ds.pairs[0][1]) as f:
        assert f.mode == "P"  # read as palette indices, not colours


def test_build_dataset_knows_the_driving_datasets(tmp_path):
    make_ade20k(tmp_path / "ade", "training")
    make_bdd100k(tmp_path / "bdd", "train")
    make_vistas(tmp_path / "vistas", "training")
    assert isinstance(build_dataset(DataConfig(name="ade20k", root=str(tmp_path / "ade")), "train"), ADE20KSceneParsing)
    assert isinstance(build_dataset(DataConfig(name="bdd100k", root=str(tmp_path / "bdd")), "train"), BDD100KSemantic)
    vistas = build_dataset(DataConfig(name="mapillary_vistas", root=str(tmp_path / "vistas"), vistas_version="v2.0"),
                           "train")
    assert isinstance(vistas, MapillaryVistasSemantic) and vistas.version == "v2.0"
    with pytest.raises(ValueError, match="unknown dataset 'kitti'.*mapillary_vistas"):
        build_dataset(DataConfig(name="kitti"), "train")


def _ade(root):
    return ADE20KSceneParsing(str(root), "val")


def _bdd(root):
    return BDD100KSemantic(str(root), "val")


def _vistas(root):
    return MapillaryVistasSemantic(str(root), "val", version="v1.2")


@pytest.mark.parametrize("make, load, break_it, message", [
    (make_ade20k, _ade, lambda r: (r / "annotations" / "validation" / "ADE_val_00000002.png").unlink(),
     r"ADE20K: 1 of 2 images have no annotation in .*annotations/validation \(missing: ADE_val_00000002.png\)"),
    (make_ade20k, _ade, lambda r: shutil.rmtree(r / "images"), r"ADE20K images: folder .*images/validation does not exist"),
    (make_ade20k, _ade, lambda r: [p.unlink() for p in (r / "images" / "validation").glob("*.jpg")],
     r"ADE20K: no \*.jpg images in .*images/validation"),
    (make_bdd100k, _bdd, lambda r: shutil.rmtree(r / "labels"),
     r"BDD100K annotations: folder .*labels/sem_seg/masks/val does not exist"),
    (make_vistas, _vistas, lambda r: (r / "config_v1.2.json").unlink(),
     r"Mapillary Vistas label config: file .*config_v1.2.json does not exist"),
    (make_vistas, _vistas, lambda r: (r / "config_v1.2.json").write_text('{"labels": [{"name": "x"}]}'),
     r"config_v1.2.json: label 0 lacks \['readable', 'evaluate'\]"),
    (make_vistas, _vistas, lambda r: shutil.rmtree(r / "validation" / "v1.2"),
     r"Mapillary Vistas v1.2 annotations: folder .*validation/v1.2/labels does not exist"),
])
def test_a_broken_or_partial_folder_names_what_is_missing(tmp_path, make, load, break_it, message):
    make(tmp_path)
    load(tmp_path)  # complete: loads
    break_it(tmp_path)
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        load(tmp_path)


def test_a_label_that_is_not_8_bit_ids_or_has_another_size_is_an_error(tmp_path):
    make_bdd100k(tmp_path)
    ds = _bdd(tmp_path)
    Image.fromarray(np.zeros((72, 128, 3), np.uint8)).save(ds.pairs[0][1])  # a colour map instead of ids
    with pytest.raises(ValueError, match="label PNG of mode 'RGB'"):
        ds[0]
    Image.fromarray(np.zeros((36, 64), np.uint8)).save(ds.pairs[1][1])
    with pytest.raises(ValueError, match=r"label 64x36 for image 128x72"):
        ds[1]
