"""Palette, overlay and scene-graph extraction on synthetic class maps with known answers."""
from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from cityscapesscripts.helpers.labels import labels as cityscapes_labels

from casseg_ros.perception import (
    PREDICATES,
    extract_scene_graph,
    make_overlay,
    palette_for_names,
)
from casseg_ros.perception.overlay import _as_uint8_ids, colorize
from casseg_ros.perception.palette import MIN_HASHED_DISTANCE, hashed_color
from casseg_ros.text import Vocabulary

ROAD, SKY, CAR, BUILDING, PERSON = range(5)
NAMES = ["road", "sky", "car", "building", "person"]


# ---------------------------------------------------------------------------------- palette

def test_a_vocabulary_gets_the_usual_colour_of_each_class_name():
    # The demo's classes: the complaint was sky in road's purple, car in traffic-sign yellow.
    names = ["sky", "building", "vegetation", "road", "sidewalk", "water", "person", "car", "boat"]
    vocab = Vocabulary(names=names, embeddings=np.eye(len(names)), provider="test")
    assert [tuple(c) for c in vocab.palette.tolist()] == [
        (70, 130, 180), (70, 70, 70), (107, 142, 35), (128, 64, 128), (244, 35, 232),  # Cityscapes
        (61, 230, 250),                                                                 # ADE20K water
        (220, 20, 60), (0, 0, 142),                                                     # Cityscapes
        (173, 255, 0)]                                                                  # ADE20K boat
    # in any order, in any company, spelt with '_' or capitals
    assert palette_for_names(["dog", "Traffic_Light", "sky"]).tolist() == [[0, 226, 252], [250, 170, 30],
                                                                            [70, 130, 180]]


def test_every_cityscapes_label_with_a_colour_gets_it():
    coloured = [(l.name, tuple(l.color)) for l in cityscapes_labels if tuple(l.color) != (0, 0, 0)]
    first = {}
    for name, color in coloured:  # "license plate" shares car's colour in the official table
        first.setdefault(color, name)
    names = [name for name, color in coloured if first[color] == name]
    assert len(names) >= 19
    assert [tuple(c) for c in palette_for_names(names).tolist()] == [dict(coloured)[n] for n in names]


def test_other_names_get_a_colour_from_their_name_alone():
    # Not in any table: the colour is the name's hash, whatever its position in the vocabulary.
    assert palette_for_names(["forklift"]).tolist() == palette_for_names(["road", "forklift"])[1:].tolist()
    assert tuple(palette_for_names(["forklift"])[0]) == hashed_color("forklift") == hashed_color(" ForkLift")
    assert hashed_color("fork lift") == hashed_color("Fork_Lift") == hashed_color("fork-lift")
    assert hashed_color("forklift") != hashed_color("pallet")


def test_palette_colours_are_distinct_and_never_black():
    names = [f"class_{i}" for i in range(300)] + ["car", "license plate", "tree", "tree-merged", "ship"]
    pal = palette_for_names(names)
    assert pal.shape == (len(names), 3) and pal.dtype == np.uint8
    colours = [tuple(c) for c in pal.tolist()]
    assert len(set(colours)) == len(names)
    assert (0, 0, 0) not in colours  # black means "unknown"
    assert colours[names.index("license plate")] != (0, 0, 142)  # car had it first
    # prefix-stable: adding classes never recolours the existing ones
    np.testing.assert_array_equal(palette_for_names(names[:25]), pal[:25])
    hashed = np.asarray(colours[:40], np.float64)
    gaps = np.linalg.norm(hashed[:, None] - hashed[None], axis=-1) + np.eye(40) * 1e9
    assert gaps.min() >= MIN_HASHED_DISTANCE
    assert palette_for_names([]).shape == (0, 3)


# ---------------------------------------------------------------------------------- overlay

@pytest.fixture
def overlay_case():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    class_map = np.zeros((6, 8), np.int32)
    class_map[:, 4:] = 1
    class_map[0, 0] = 255  # unknown
    class_map[5, 7] = 7  # not in a 2-class palette
    palette = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    return image, class_map, palette


def test_overlay_alpha_extremes_and_unknown_pixels(overlay_case):
    image, class_map, palette = overlay_case
    np.testing.assert_array_equal(make_overlay(image, class_map, palette, 0.0), image)
    full = make_overlay(image, class_map, palette, 1.0)
    assert tuple(full[1, 1]) == (255, 0, 0)
    assert tuple(full[1, 5]) == (0, 0, 255)
    # Unknown ids keep the camera pixel at any alpha.
    assert tuple(full[0, 0]) == tuple(image[0, 0])
    assert tuple(full[5, 7]) == tuple(image[5, 7])


def test_overlay_half_alpha_is_the_rounded_mean(overlay_case):
    image, class_map, palette = overlay_case
    out = make_overlay(image, class_map, palette, 0.5)
    expected = np.floor(0.5 * image[2, 2].astype(float) + 0.5 * np.array([255, 0, 0]) + 0.5)
    assert np.abs(out[2, 2].astype(int) - expected.astype(int)).max() <= 1
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out is not image


def test_overlay_large_ids_use_the_same_rules(overlay_case):
    image, class_map, palette = overlay_case
    wide = class_map.astype(np.int64)
    wide[3, 3] = 70000  # does not fit uint8: slower path, same semantics
    wide[4, 4] = -3
    out = make_overlay(image, wide, palette, 1.0)
    assert tuple(out[3, 3]) == tuple(image[3, 3]) and tuple(out[4, 4]) == tuple(image[4, 4])
    # The same map with the out-of-range ids written as 255 (also unknown) fits uint8: the fast
    # (cv2.LUT) path; `wide` does not: the table path. Both paths must agree pixel for pixel.
    narrow = np.where((wide < 0) | (wide > 255), 255, wide).astype(np.int32)
    assert _as_uint8_ids(narrow) is not None and _as_uint8_ids(wide) is None  # each path really taken
    colors_fast, known_fast = colorize(narrow, palette)
    colors_slow, known_slow = colorize(wide, palette)
    np.testing.assert_array_equal(colors_fast, colors_slow)
    np.testing.assert_array_equal(known_fast, known_slow)
    assert known_slow.sum() == known_slow.size - 4  # 255, 7, 70000 and -3 are unknown


def test_overlay_rejects_bad_inputs(overlay_case):
    image, class_map, palette = overlay_case
    with pytest.raises(ValueError):
        make_overlay(image, class_map[:-1], palette, 0.5)
    with pytest.raises(ValueError):
        make_overlay(image, class_map, palette, 1.5)
    with pytest.raises(ValueError):
        make_overlay(image.astype(np.float32), class_map, palette, 0.5)


# ------------------------------------------------------------------------------ scene graph

def street_scene() -> np.ndarray:
    """120x160: sky on top, road below, a car on the horizon line, a person inside the road,
    a 5x5 car speck (below min_area) and an ignored (255) patch in the road."""
    cm = np.full((120, 160), ROAD, np.int32)
    cm[:40] = SKY
    cm[40:60, 60:100] = CAR
    cm[80:90, 100:110] = PERSON
    cm[100:105, 20:25] = CAR
    cm[110:120, 140:160] = 255
    return cm


def rel_set(graph) -> set[tuple[str, str, str]]:
    lab = {inst.instance_id: inst.label for inst in graph.instances}
    return {(lab[r.source], r.predicate, lab[r.target]) for r in graph.relations}


def test_street_scene_instances():
    g = extract_scene_graph(street_scene(), NAMES)
    assert [i.label for i in g.instances] == ["sky", "road", "car", "person"]  # raster order
    assert [i.instance_id for i in g.instances] == [0, 1, 2, 3]
    sky, road, car, person = g.instances
    assert (sky.bbox, sky.area, sky.centroid) == ((0, 0, 160, 40), 6400, (79.5, 19.5))
    assert (car.bbox, car.area, car.centroid) == ((60, 40, 40, 20), 800, (79.5, 49.5))
    assert (person.bbox, person.area, person.centroid) == ((100, 80, 10, 10), 100, (104.5, 84.5))
    assert road.class_id == ROAD and road.bbox == (0, 40, 160, 80)
    assert road.area == 80 * 160 - 800 - 100 - 25 - 200
    ys, xs = np.nonzero(street_scene() == ROAD)
    assert road.centroid == pytest.approx((xs.mean(), ys.mean()))
    assert all(i.score == 1.0 for i in g.instances)


def test_street_scene_relations():
    g = extract_scene_graph(street_scene(), NAMES)
    rels = rel_set(g)
    for a, b in [("sky", "road"), ("sky", "car"), ("car", "road"), ("person", "road")]:
        assert (a, "touches", b) in rels and (b, "touches", a) in rels
    assert ("sky", "above", "road") in rels and ("road", "below", "sky") in rels
    assert ("sky", "above", "car") in rels and ("car", "above", "road") in rels
    assert ("person", "inside", "road") in rels
    assert ("road", "inside", "person") not in rels
    assert ("car", "inside", "road") not in rels  # it also touches the sky
    # An inside pair gets no centroid-based predicate; nothing else touches the person.
    assert {r for r in rels if "person" in (r[0], r[2])} == {
        ("person", "touches", "road"), ("road", "touches", "person"), ("person", "inside", "road")}
    assert all(r.weight == 1.0 for r in g.relations)
    assert {r.predicate for r in g.relations} <= set(PREDICATES)
    keys = [(r.source, r.target, PREDICATES.index(r.predicate)) for r in g.relations]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_min_area_and_ignore_ids():
    cm = street_scene()
    small = extract_scene_graph(cm, NAMES, min_area=10)
    assert [(i.label, i.area) for i in small.instances if i.label == "car"] == [("car", 800), ("car", 25)]
    # 255 is not a class here anyway; ignoring a real class drops it and all its relations.
    no_sky = extract_scene_graph(cm, NAMES, ignore_ids=(SKY, 255))
    assert [i.label for i in no_sky.instances] == ["road", "car", "person"]
    assert not any("sky" in (r[0], r[2]) for r in rel_set(no_sky))
    assert ("car", "touches", "road") in rel_set(no_sky)
    # Without 255 in ignore_ids the patch still is no instance: 255 >= len(NAMES).
    assert len(extract_scene_graph(cm, NAMES, ignore_ids=()).instances) == 4


def test_confidence_scores_and_adjacency_weights():
    cm = street_scene()
    conf = np.ones(cm.shape, np.float32)
    conf[40:60, 60:100] = 0.25
    conf[60:80, :] = np.linspace(0, 1, 160, dtype=np.float32)
    adjacency = np.arange(25, dtype=np.float32).reshape(5, 5) / 25.0
    g = extract_scene_graph(cm, NAMES, confidence=conf, adjacency=adjacency)
    by_label = {i.label: i for i in g.instances}
    assert by_label["car"].score == pytest.approx(0.25)
    assert by_label["road"].score == pytest.approx(float(conf[cm == ROAD].mean()), rel=1e-6)
    assert by_label["sky"].score == pytest.approx(1.0)
    cls = {i.instance_id: i.class_id for i in g.instances}
    assert g.relations
    for r in g.relations:
        assert r.weight == pytest.approx(float(adjacency[cls[r.source], cls[r.target]]))
    w = {(r.source, r.target): r.weight for r in g.relations}
    assert w[(2, 1)] != w[(1, 2)]  # directional: adjacency[car, road] vs adjacency[road, car]


def test_eight_connectivity_and_touching_definition():
    cm = np.zeros((20, 20), np.int32)  # road
    cm[2:6, 2:6] = CAR
    cm[6:10, 6:10] = CAR  # touches the first square only at a corner: same instance (8-conn)
    cm[2:6, 12:16] = PERSON
    cm[6:10, 16:20] = CAR  # corner contact with the person: not a 4-neighbour, so no "touches"
    g = extract_scene_graph(cm, NAMES, min_area=1)
    cars = [i for i in g.instances if i.label == "car"]
    assert sorted(c.area for c in cars) == [16, 32]
    rels = rel_set(g)
    assert ("person", "touches", "car") not in rels and ("car", "touches", "person") not in rels


def test_inside_rule_nesting_and_straddling():
    cm = np.zeros((40, 60), np.int32)  # road
    cm[5:25, 5:25] = BUILDING
    cm[10:15, 10:15] = PERSON  # nested: person in building in road
    cm[8:20, 35:45] = BUILDING
    cm[12:16, 45:49] = CAR  # inside the road's bbox, but also touches the 2nd building
    g = extract_scene_graph(cm, NAMES, min_area=1)
    inside = [(g.instances[r.source].bbox, g.instances[r.target].label)
              for r in g.relations if r.predicate == "inside"]
    # Only the first building (nested person does not count against it) and the person.
    assert sorted(inside) == [((5, 5, 20, 20), "road"), ((10, 10, 5, 5), "building")]
    rels = rel_set(g)
    assert ("car", "touches", "building") in rels and ("car", "touches", "road") in rels


def test_matches_opencv_and_brute_force_on_random_maps():
    rng = np.random.default_rng(7)
    coarse = rng.integers(0, 5, (12, 20))
    cm = cv2.resize(coarse.astype(np.uint8), (160, 96), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    noise = rng.random(cm.shape) < 0.02
    cm[noise] = rng.integers(0, 6, int(noise.sum()))
    cm[cm == 5] = 255
    g = extract_scene_graph(cm, NAMES, min_area=3, max_instances=10_000)
    by_key = {(i.class_id, i.area, i.bbox): i for i in g.instances}
    assert len(by_key) == len(g.instances)
    # Reference: per-class OpenCV components -> an instance-id image.
    inst_img = np.full(cm.shape, -1, np.int64)
    n_expected = 0
    for c in range(5):
        n, labels, stats, cents = cv2.connectedComponentsWithStats((cm == c).astype(np.uint8), connectivity=8)
        for j in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[j])
            if area < 3:
                continue
            n_expected += 1
            inst = by_key[(c, area, (x, y, w, h))]
            assert inst.centroid == pytest.approx(tuple(cents[j]))
            inst_img[labels == j] = inst.instance_id
    assert n_expected == len(g.instances)
    # touches == set of 4-neighbour pixel pairs between two different kept instances.
    pairs = set()
    for a, b in ((inst_img[:, :-1], inst_img[:, 1:]), (inst_img[:-1], inst_img[1:])):
        m = (a >= 0) & (b >= 0) & (a != b)
        pairs |= {(int(p), int(q)) for p, q in zip(a[m], b[m])}
        pairs |= {(int(q), int(p)) for p, q in zip(a[m], b[m])}
    touches = {(r.source, r.target) for r in g.relations if r.predicate == "touches"}
    assert touches == pairs and len(pairs) > 20
    # Instance ids follow raster order of the first pixel.
    firsts = [int(np.flatnonzero(inst_img.ravel() == i.instance_id)[0]) for i in g.instances]
    assert firsts == sorted(firsts)


def test_class_permutation_gives_the_same_graph():
    cm = street_scene()
    perm = np.array([3, 0, 4, 1, 2])  # old id -> new id
    cm2 = np.where(cm == 255, 255, perm[np.minimum(cm, 4)])
    names2 = [""] * 5
    for old, new in enumerate(perm):
        names2[new] = NAMES[old]
    conf = np.random.default_rng(3).random(cm.shape).astype(np.float32)
    g1 = extract_scene_graph(cm, NAMES, confidence=conf)
    g2 = extract_scene_graph(cm2, names2, confidence=conf)
    assert [i.class_id for i in g2.instances] == [int(perm[i.class_id]) for i in g1.instances]
    strip = lambda g: [(i.instance_id, i.label, i.bbox, i.area, i.centroid, i.score) for i in g.instances]
    assert strip(g1) == strip(g2)
    assert g1.relations == g2.relations


def test_max_instances_keeps_largest_and_renumbers():
    cm = np.zeros((40, 100), np.int32)
    for k, size in enumerate([3, 9, 5, 7]):  # car squares of different sizes left to right
        cm[1:1 + size, 20 * k + 1:20 * k + 1 + size] = CAR
    g = extract_scene_graph(cm, NAMES, min_area=1, max_instances=3)
    assert [(i.instance_id, i.label, i.area) for i in g.instances] == [
        (0, "road", 4000 - 9 - 81 - 25 - 49), (1, "car", 81), (2, "car", 49)]


def test_degenerate_inputs_and_json():
    assert extract_scene_graph(np.full((8, 8), 255, np.int32), NAMES).instances == []
    assert extract_scene_graph(np.zeros((0, 5), np.int32), NAMES).instances == []
    one = extract_scene_graph(np.zeros((1, 1), np.uint8), NAMES, min_area=1)
    assert [(i.bbox, i.area) for i in one.instances] == [((0, 0, 1, 1), 1)] and one.relations == []
    data = extract_scene_graph(street_scene(), NAMES).to_dict()
    assert json.loads(json.dumps(data)) == data
    # the message's fields by name, one list per field (format 2)
    assert data["format_version"] == 2 and data["predicate_names"] == list(PREDICATES)
    assert data["objects"]["boxes"][2] == [60, 40, 40, 20] and data["objects"]["labels"][2] == "car"
    assert data["objects"]["centroids_3d"] == [None] * 4 and data["objects"]["track_states"] == [0] * 4
    assert len(data["relations"]["sources"]) == len(data["relations"]["weights"]) > 0
    with pytest.raises(ValueError):
        extract_scene_graph(street_scene(), NAMES, adjacency=np.ones((3, 3)))
    with pytest.raises(TypeError):
        extract_scene_graph(street_scene().astype(np.float32), NAMES)


def test_full_resolution_speed_budget():
    """Guards against per-pixel Python: ~1-2 ms on one core; the bound allows a busy machine."""
    rng = np.random.default_rng(0)
    cm = np.full((512, 1024), 10, np.int32)
    cm[200:] = 2
    cm[300:] = 0
    for _ in range(20):
        y, x = rng.integers(300, 480), rng.integers(0, 960)
        cm[y:y + 30, x:x + 60] = rng.choice([5, 6, 7, 11, 13, 14, 18])
    names = [f"c{i}" for i in range(19)]
    conf = rng.random(cm.shape, dtype=np.float32)
    adjacency = rng.random((19, 19)).astype(np.float32)
    extract_scene_graph(cm, names, conf, adjacency)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        g = extract_scene_graph(cm, names, conf, adjacency)
        times.append(time.perf_counter() - t0)
    assert len(g.instances) >= 20
    assert float(np.median(times)) < 0.05
