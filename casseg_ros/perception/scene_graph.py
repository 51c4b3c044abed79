"""Scene graph (objects + spatial relations) from a per-pixel class map.

Runs on every frame, so it works on horizontal *runs* (maximal same-class pixel segments of a
row) instead of pixels: a 512x1024 road scene has a few thousand runs, and everything after the
run extraction (connectivity, statistics, adjacency) is vectorised numpy over runs. This is one
linear pass over the pixels in total, where per-class `cv2.connectedComponentsWithStats` would
be one full-image pass per class present.

Definitions (all deterministic):

* **Instance**: an 8-connected component of pixels with the same class id, with
  `area >= min_area`. Ids in `ignore_ids`, negative ids and ids `>= len(class_names)` never form
  instances (and never touch anything).
* **Instance ids**: `0..N-1` in raster order of each instance's first pixel (top-to-bottom,
  then left-to-right), so they do not depend on the class numbering. When more than
  `max_instances` qualify, the largest ones are kept (ties: earlier in raster order), then
  numbered in raster order.
* **score**: mean `confidence` over the instance's pixels (1.0 when no confidence is given).
* **bbox**: `(x_min, y_min, width, height)` in pixels; **centroid**: mean `(x, y)` = (column, row).
* **touches** (A->B and B->A): some pixel of A is a 4-neighbour of some pixel of B.
* **inside** (A->B only): A's bbox lies strictly inside B's bbox (no shared edge), A touches B,
  and every other instance A touches is itself strictly inside A's bbox (nested in A). So a
  window in a building on a road gives `window inside building` and `building inside road`.
  It is "B surrounds A" as far as the kept instances tell: A may still border ignored or
  too-small regions.
* **above/below/left_of/right_of**: for touching pairs that are not in an `inside` relation,
  from the centroid offset: if `|dy| >= |dx|` the one with smaller y is `above` the other
  (and the other `below` it), else the one with smaller x is `left_of` (other `right_of`).
  Centroids of very large regions (road, sky) make this coarse near the image sides.
* **weight**: `adjacency[class_source, class_target]` when an adjacency matrix is given, else 1.0.

**Stride** `s > 1` (the node's default is 4, the model's output stride): the graph is found on the
decimated map `class_map[::s, ::s]` and measured in image pixels. Sample (r, c) stands for its
block of image pixels, rows `s*r .. s*r+s-1` and columns `s*c .. s*c+s-1` (clipped at the image
edge). So an instance is an 8-connected component of samples; its `area`, `centroid` and `bbox`
are those of the union of its samples' blocks (bbox edges on multiples of s, or the image edge);
`min_area` and `max_instances` compare those block areas; `score` is the mean confidence of its
samples; `touches` means 4-neighbouring samples. With s = 1 this is exactly the full-resolution
graph. How it differs from s = 1: a region thinner than s pixels may be missed or split, two
regions separated by fewer than s pixels may be merged, and a bbox edge moves by less than s
pixels; test/test_scene_graph_stride.py measures this on procedural scenes.

Relations are sorted by `(source, target, predicate)`, predicates in `PREDICATES` order.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["ARRAY_FIELDS", "FORMAT_VERSION", "Instance", "InstanceRuns", "PREDICATES", "Relation", "SceneGraph", "TRACK_CONFIRMED",
           "TRACK_NONE", "TRACK_TENTATIVE", "extract_scene_graph", "scene_graph_record", "segment_instances"]

PREDICATES: tuple[str, ...] = ("touches", "above", "below", "left_of", "right_of", "inside")

# casseg_msgs/SceneGraph format 2 (struct of arrays) and its tracking states.
FORMAT_VERSION = 2
TRACK_NONE, TRACK_TENTATIVE, TRACK_CONFIRMED = 0, 1, 2


@dataclass(frozen=True)
class Instance:
    """One object of a SceneGraph, as Python values (a view for tests and reports; the graph is arrays)."""

    instance_id: int  # the object's id: this frame's instance id, or its track id when tracked
    class_id: int
    label: str
    score: float
    bbox: tuple[int, int, int, int]  # x_min, y_min, width, height
    centroid: tuple[float, float]  # x (column), y (row)
    area: int
    # From a registered depth image (optical frame, metres); None without depth or valid pixels.
    centroid_3d: tuple[float, float, float] | None = None
    extent_3d: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class Relation:
    """One relation of a SceneGraph as Python values; source and target are the objects' ids."""

    source: int
    target: int
    predicate: str
    weight: float
    distance_3d: float | None = None  # between the two 3D centroids, metres


# Every array field of a SceneGraph: (dtype, row width: 0 = a vector of N or M entries, k = (N, k)).
# The dtypes are casseg_msgs/SceneGraph's, so a graph and its message hold the same numbers.
_OBJECT_FIELDS: dict[str, tuple[np.dtype, int]] = {
    "ids": (np.dtype(np.uint32), 0), "class_ids": (np.dtype(np.uint16), 0), "scores": (np.dtype(np.float32), 0),
    "boxes": (np.dtype(np.uint32), 4), "centroids": (np.dtype(np.float32), 2), "areas": (np.dtype(np.uint32), 0),
    "centroids_3d": (np.dtype(np.float32), 3), "extents_3d": (np.dtype(np.float32), 3),
    "track_states": (np.dtype(np.uint8), 0), "track_ages": (np.dtype(np.uint32), 0),
    "velocities_3d": (np.dtype(np.float32), 3)}
_RELATION_FIELDS: dict[str, tuple[np.dtype, int]] = {
    "sources": (np.dtype(np.uint32), 0), "targets": (np.dtype(np.uint32), 0), "predicates": (np.dtype(np.uint8), 0),
    "weights": (np.dtype(np.float32), 0), "distances_3d": (np.dtype(np.float32), 0)}
ARRAY_FIELDS: tuple[str, ...] = (*_OBJECT_FIELDS, *_RELATION_FIELDS)  # casseg_msgs/SceneGraph's sequences but predicate_names
# What a field is when it is not given: NaN for 3D quantities and velocities (unknown), else 0 / the index.
_NAN_FIELDS = ("centroids_3d", "extents_3d", "velocities_3d", "distances_3d")


def _column(values: Any, dtype: np.dtype, width: int, name: str) -> np.ndarray:
    """`values` as a C-contiguous array of `dtype`: (n,) for width 0, else (n, width) (a flat
    (n*width,) field, as the message holds it, is reshaped)."""
    array = np.ascontiguousarray(values, dtype=dtype)
    if width and array.ndim == 1 and array.size % width == 0:
        array = array.reshape(-1, width)
    if array.ndim != (2 if width else 1) or (width and array.shape[1] != width):
        raise ValueError(f"scene graph field {name!r} has shape {array.shape}, expected (n{f', {width}' if width else ''})")
    return array


@dataclass(frozen=True, eq=False)
class SceneGraph:
    """Objects and relations of one frame as parallel arrays (struct of arrays), the numbers of
    casseg_msgs/SceneGraph format 2 in its dtypes: object i is row i of every object array,
    relation j entry j of every relation array; `sources`/`targets` index the object arrays.

    Objects (N): ids (instance id, or track id when tracked), class_ids, scores, boxes (N,4) x, y,
    w, h, centroids (N,2) x, y, areas, centroids_3d / extents_3d (N,3) NaN without depth, and the
    tracking fields track_states (TRACK_*), track_ages, velocities_3d (N,3) NaN unknown. Relations
    (M): sources, targets, predicates (index into `predicate_names`), weights, distances_3d (NaN
    unless both ends have 3D). A field not given is empty (or, for a given N, "untracked": ids
    0..N-1, TRACK_NONE, age 0, NaN 3D and velocity). `class_names` names the class ids (labels).
    """

    class_names: tuple[str, ...] = ()
    ids: np.ndarray | None = None
    class_ids: np.ndarray | None = None
    scores: np.ndarray | None = None
    boxes: np.ndarray | None = None
    centroids: np.ndarray | None = None
    areas: np.ndarray | None = None
    centroids_3d: np.ndarray | None = None
    extents_3d: np.ndarray | None = None
    track_states: np.ndarray | None = None
    track_ages: np.ndarray | None = None
    velocities_3d: np.ndarray | None = None
    sources: np.ndarray | None = None
    targets: np.ndarray | None = None
    predicates: np.ndarray | None = None
    weights: np.ndarray | None = None
    distances_3d: np.ndarray | None = None
    predicate_names: tuple[str, ...] = PREDICATES

    def __post_init__(self) -> None:
        set_field = object.__setattr__
        set_field(self, "class_names", tuple(str(n) for n in self.class_names))
        set_field(self, "predicate_names", tuple(str(n) for n in self.predicate_names))
        for group in (_OBJECT_FIELDS, _RELATION_FIELDS):
            given = {name: _column(getattr(self, name), *group[name], name) for name in group
                     if getattr(self, name) is not None}
            counts = {array.shape[0] for array in given.values()}
            if len(counts) > 1:
                raise ValueError(f"scene graph fields of different lengths: "
                                 f"{ {name: array.shape[0] for name, array in given.items()} }")
            count = counts.pop() if counts else 0
            for name in group:
                set_field(self, name, given[name] if name in given else self._default(name, count))
        n = self.num_objects
        if self.num_relations and (int(self.sources.max()) >= n or int(self.targets.max()) >= n):
            raise ValueError(f"relation ends must index the {n} objects")
        if self.num_relations and int(self.predicates.max()) >= len(self.predicate_names):
            raise ValueError(f"predicates must index the {len(self.predicate_names)} predicate names")

    @staticmethod
    def _default(name: str, count: int) -> np.ndarray:
        dtype, width = (_OBJECT_FIELDS | _RELATION_FIELDS)[name]
        shape = (count,) if width == 0 else (count, width)
        if name in _NAN_FIELDS:
            return np.full(shape, np.nan, dtype)
        if name == "ids":
            return np.arange(count, dtype=dtype)
        return np.zeros(shape, dtype)

    @property
    def num_objects(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_relations(self) -> int:
        return int(self.sources.shape[0])

    def with_tracks(self, ids: np.ndarray, track_states: np.ndarray, track_ages: np.ndarray,
                    velocities_3d: np.ndarray) -> "SceneGraph":
        """The graph with a tracker's fields (one entry per object, in object order): persistent ids,
        TRACK_* states, ages in frames, velocities (N,3) m/s in the optical frame (NaN unknown)."""
        return dataclasses.replace(self, ids=ids, track_states=track_states, track_ages=track_ages,
                                   velocities_3d=velocities_3d)

    def with_3d(self, centroids_3d: np.ndarray, extents_3d: np.ndarray, distances_3d: np.ndarray) -> "SceneGraph":
        """The graph with 3D geometry per object ((N,3), NaN without depth) and relation ((M,))."""
        return dataclasses.replace(self, centroids_3d=centroids_3d, extents_3d=extents_3d, distances_3d=distances_3d)

    def labels(self) -> list[str]:
        """The class name of every object ("class_<id>" where `class_names` does not name it)."""
        names = self.class_names
        return [names[c] if c < len(names) else f"class_{c}" for c in self.class_ids.tolist()]

    @property
    def instances(self) -> list[Instance]:
        """Every object as an Instance (per-object Python: for tests and reports, not the frame path)."""
        has_3d = np.isfinite(self.centroids_3d).all(axis=1).tolist()
        rows = zip(self.ids.tolist(), self.class_ids.tolist(), self.labels(), self.scores.tolist(),
                   self.boxes.tolist(), self.centroids.tolist(), self.areas.tolist(), self.centroids_3d.tolist(),
                   self.extents_3d.tolist(), has_3d)
        return [Instance(i, c, label, score, tuple(box), tuple(centroid), area,
                         tuple(where) if placed else None, tuple(size) if placed else None)
                for i, c, label, score, box, centroid, area, where, size, placed in rows]

    @property
    def relations(self) -> list[Relation]:
        """Every relation as a Relation between the objects' ids (per-object Python, as `instances`)."""
        ids = self.ids
        rows = zip(ids[self.sources].tolist(), ids[self.targets].tolist(), self.predicates.tolist(),
                   self.weights.tolist(), self.distances_3d.tolist())
        return [Relation(s, t, self.predicate_names[p], w, d if d == d else None) for s, t, p, w, d in rows]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SceneGraph):
            return NotImplemented
        return (self.class_names == other.class_names and self.predicate_names == other.predicate_names
                and all(np.array_equal(getattr(self, name), getattr(other, name), equal_nan=name in _NAN_FIELDS)
                        for name in ARRAY_FIELDS))

    __hash__ = None  # mutable-looking arrays: not hashable

    def to_dict(self) -> dict:
        """JSON-able form, the message's fields by name: "objects" and "relations" hold one list per
        field (vectors as rows, e.g. boxes [[x, y, w, h], ...]; NaN as null), objects also their
        "labels"; plus "format_version" and "predicate_names"."""
        objects: dict[str, Any] = {"ids": self.ids.tolist(), "class_ids": self.class_ids.tolist(),
                                   "labels": self.labels()}
        for name in _OBJECT_FIELDS:
            if name not in objects:
                objects[name] = _json_values(getattr(self, name))
        relations = {name: _json_values(getattr(self, name)) for name in _RELATION_FIELDS}
        return {"format_version": FORMAT_VERSION, "predicate_names": list(self.predicate_names),
                "objects": objects, "relations": relations}


def _json_values(values: np.ndarray) -> list:
    """Array -> nested lists; NaN (a whole NaN row of a vector field) -> None."""
    if values.dtype.kind != "f":
        return values.tolist()
    if values.ndim == 1:
        return [v if v == v else None for v in values.tolist()]
    finite = np.isfinite(values).all(axis=1).tolist()
    return [row if ok else None for row, ok in zip(values.tolist(), finite)]


@dataclass(frozen=True)
class InstanceRuns:
    """Which pixels belong to which instance, as horizontal runs (cheap to keep per frame)."""

    shape: tuple[int, int]  # of the (decimated) map the runs tile
    start: np.ndarray  # flat index of each run's first sample
    length: np.ndarray
    instance: np.ndarray  # instance id of each run, -1 for samples of no instance
    stride: int = 1  # sample (r, c) is image pixel (stride*r, stride*c)

    def to_map(self) -> np.ndarray:
        """(H/s,W/s) int32 instance id per sample, -1 where no instance (aligned with `array[::s, ::s]`)."""
        return np.repeat(self.instance.astype(np.int32), self.length).reshape(self.shape)


def scene_graph_record(frame_index: int, stamp_ns: int, frame_id: str, graph: SceneGraph) -> dict:
    """One frame's entry in a `scene_graphs.json` (`{"frames": [record, ...]}`), the one schema
    wherever a graph is written: the frame's index in its recording, its header stamp (ns) and
    frame_id, then `SceneGraph.to_dict()` (format_version, predicate_names, objects, relations)."""
    return {"frame": int(frame_index), "stamp_ns": int(stamp_ns), "frame_id": str(frame_id), **graph.to_dict()}


@dataclass
class _Runs:
    """Horizontal runs of one class map, in raster order."""

    start: np.ndarray  # flat index of the first pixel
    row: np.ndarray
    x0: np.ndarray  # first column
    x1: np.ndarray  # one past the last column
    cls: np.ndarray  # class id (int64)


def _find_runs(class_map: np.ndarray) -> _Runs:
    """Split every row into maximal same-class segments (one vectorised pass over the pixels)."""
    h, w = class_map.shape
    flat = class_map.reshape(-1)
    change = np.empty(flat.shape[0], dtype=bool)
    change[0] = True
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    change[::w] = True  # every row starts a run
    start = np.flatnonzero(change)
    end = np.empty_like(start)
    end[:-1] = start[1:]
    end[-1] = flat.shape[0]
    row = start // w
    x0 = start - row * w
    x1 = end - row * w
    return _Runs(start=start, row=row, x0=x0, x1=x1, cls=flat[start].astype(np.int64))


def _vertical_run_pairs(runs: _Runs, width: int) -> tuple[np.ndarray, np.ndarray]:
    """All (upper, lower) run pairs on consecutive rows whose pixels are 8-neighbours.

    Runs of a row tile it, so for a run in row r+1 the 8-neighbouring runs of row r are the
    contiguous index range between the runs containing columns x0-1 and x1 (clamped).
    """
    lower = np.flatnonzero(runs.row > 0)
    if lower.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    up_row_base = (runs.row[lower] - 1) * width
    left = up_row_base + np.maximum(runs.x0[lower] - 1, 0)
    right = up_row_base + np.minimum(runs.x1[lower], width - 1)
    lo = np.searchsorted(runs.start, left, side="right") - 1
    hi = np.searchsorted(runs.start, right, side="right") - 1
    counts = hi - lo + 1
    total = int(counts.sum())
    first_of_group = np.cumsum(counts) - counts
    offsets = np.arange(total) - np.repeat(first_of_group, counts)
    upper_idx = np.repeat(lo, counts) + offsets
    lower_idx = np.repeat(lower, counts)
    return upper_idx, lower_idx


def _check_inputs(class_map: np.ndarray, k: int, confidence: np.ndarray | None,
                  adjacency: np.ndarray | None) -> None:
    if class_map.ndim != 2:
        raise ValueError(f"class_map must be (H, W), got shape {class_map.shape}")
    if not np.issubdtype(class_map.dtype, np.integer):
        raise TypeError(f"class_map must hold integer class ids, got dtype {class_map.dtype}")
    if confidence is not None and confidence.shape != class_map.shape:
        raise ValueError(f"confidence shape {confidence.shape} != class_map shape {class_map.shape}")
    if adjacency is not None and adjacency.shape != (k, k):
        raise ValueError(f"adjacency must be ({k}, {k}) for {k} class names, got {adjacency.shape}")


def extract_scene_graph(class_map: np.ndarray, class_names: Sequence[str], confidence: np.ndarray | None = None,
                        adjacency: np.ndarray | None = None, **options: Any) -> SceneGraph:
    """Instances and relations of `class_map` (see the module docstring for the exact rules);
    `options`: min_area, ignore_ids, max_instances as in `segment_instances`."""
    return segment_instances(class_map, class_names, confidence, adjacency, **options)[0]


def segment_instances(
    class_map: np.ndarray,
    class_names: Sequence[str],
    confidence: np.ndarray | None = None,
    adjacency: np.ndarray | None = None,
    min_area: int = 64,
    ignore_ids: Iterable[int] = (255,),
    max_instances: int = 256,
    stride: int = 1,
) -> tuple[SceneGraph, InstanceRuns]:
    """`extract_scene_graph`, plus the samples of every instance (for per-object depth); `stride`
    as in the module docstring."""
    class_map = np.asarray(class_map)
    confidence = None if confidence is None else np.asarray(confidence)
    adjacency = None if adjacency is None else np.asarray(adjacency, dtype=np.float64)
    k = len(class_names)
    _check_inputs(class_map, k, confidence, adjacency)
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    s = int(stride)
    image_h, image_w = class_map.shape
    class_map = class_map[::s, ::s]
    confidence = None if confidence is None else confidence[::s, ::s]
    h, w = class_map.shape
    empty = np.zeros(0, dtype=np.int64)
    if h == 0 or w == 0 or max_instances <= 0:
        return SceneGraph(tuple(class_names)), InstanceRuns((h, w), empty, empty, empty, s)

    runs = _find_runs(class_map)
    n_runs = runs.start.shape[0]
    ignore = np.asarray(sorted(set(int(i) for i in ignore_ids)), dtype=np.int64)
    valid = (runs.cls >= 0) & (runs.cls < k)
    if ignore.size:
        valid &= ~np.isin(runs.cls, ignore)

    # Connectivity: same-class 8-neighbour runs on consecutive rows belong to one component
    # (runs on the same row are never same-class neighbours: they would be one run).
    up, low = _vertical_run_pairs(runs, w)
    same = (runs.cls[up] == runs.cls[low]) & valid[up]
    graph = coo_matrix((np.ones(int(same.sum()), dtype=np.int8), (up[same], low[same])),
                       shape=(n_runs, n_runs))
    n_comp, comp = connected_components(graph, directed=False)

    # Per-component statistics from per-run sums, in image pixels: a run of samples stands for the
    # image block of columns [px0, px1) x rows [py0, py1) (with s = 1, the run's own pixels).
    px0, px1 = s * runs.x0, np.minimum(s * runs.x1, image_w)
    py0, py1 = s * runs.row, np.minimum(s * runs.row + s, image_h)
    length = ((px1 - px0) * (py1 - py0)).astype(np.float64)  # the block's pixel count
    area = np.bincount(comp, weights=length, minlength=n_comp)
    sum_x = np.bincount(comp, weights=length * (px0 + px1 - 1) * 0.5, minlength=n_comp)
    sum_y = np.bincount(comp, weights=length * (py0 + py1 - 1) * 0.5, minlength=n_comp)
    first = np.full(n_comp, n_runs, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(n_runs))
    x_min = np.full(n_comp, image_w, dtype=np.int64)
    np.minimum.at(x_min, comp, px0)
    x_max = np.zeros(n_comp, dtype=np.int64)
    np.maximum.at(x_max, comp, px1 - 1)
    y_max = np.zeros(n_comp, dtype=np.int64)
    np.maximum.at(y_max, comp, py1 - 1)
    y_min = py0[first]  # the first run in raster order is on the top row

    keep = np.flatnonzero(valid[first] & (area >= max(int(min_area), 1)))
    if keep.size > max_instances:
        # Largest first, ties by raster order; then back to raster order for numbering.
        order = np.lexsort((first[keep], -area[keep]))
        keep = keep[order[:max_instances]]
    keep = keep[np.argsort(first[keep], kind="stable")]
    n = keep.size
    run_length = runs.x1 - runs.x0
    if n == 0:
        return SceneGraph(tuple(class_names)), InstanceRuns((h, w), runs.start, run_length,
                                                         np.full(n_runs, -1, dtype=np.int64), s)
    inst_of_comp = np.full(n_comp, -1, dtype=np.int64)
    inst_of_comp[keep] = np.arange(n)

    if confidence is None:
        score = np.ones(n)
    else:  # mean over the samples (with s = 1, the pixels)
        run_conf = np.add.reduceat(np.ascontiguousarray(confidence).reshape(-1), runs.start, dtype=np.float64)
        samples = np.bincount(comp, weights=run_length, minlength=n_comp)[keep]
        score = np.bincount(comp, weights=run_conf, minlength=n_comp)[keep] / samples

    inst_cls = runs.cls[first[keep]]
    cx = sum_x[keep] / area[keep]
    cy = sum_y[keep] / area[keep]
    bx0, by0, bx1, by1 = x_min[keep], y_min[keep], x_max[keep], y_max[keep]
    boxes = np.stack([bx0, by0, bx1 - bx0 + 1, by1 - by0 + 1], axis=1)

    # Touching pairs: 4-neighbour run pairs, horizontally (consecutive runs of a row, which
    # always differ in class) and vertically (overlapping columns on consecutive rows).
    run_inst = inst_of_comp[comp]
    same_row = np.flatnonzero(runs.row[:-1] == runs.row[1:])
    overlap4 = (runs.x0[up] < runs.x1[low]) & (runs.x0[low] < runs.x1[up])
    a = np.concatenate([run_inst[same_row], run_inst[up[overlap4]]])
    b = np.concatenate([run_inst[same_row + 1], run_inst[low[overlap4]]])
    ok = (a >= 0) & (b >= 0) & (a != b)
    lo_id, hi_id = np.minimum(a[ok], b[ok]), np.maximum(a[ok], b[ok])
    pair_codes = np.unique(lo_id * n + hi_id)
    pa, pb = pair_codes // n, pair_codes % n

    sources, targets, predicates, weights = _relations(pa, pb, n, inst_cls, cx, cy, bx0, by0, bx1, by1, adjacency)
    graph = SceneGraph(class_names=tuple(class_names), class_ids=inst_cls, scores=score, boxes=boxes,
                       centroids=np.stack([cx, cy], axis=1), areas=area[keep], sources=sources, targets=targets,
                       predicates=predicates, weights=weights)
    return graph, InstanceRuns((h, w), runs.start, run_length, run_inst, s)


def _relations(pa: np.ndarray, pb: np.ndarray, n: int, inst_cls: np.ndarray, cx: np.ndarray,
               cy: np.ndarray, bx0: np.ndarray, by0: np.ndarray, bx1: np.ndarray,
               by1: np.ndarray, adjacency: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Directed relations for the undirected touching pairs (pa[i] < pb[i]): (sources, targets,
    predicates as indices into PREDICATES, weights), sorted."""
    def strictly_within(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return (bx0[i] > bx0[j]) & (by0[i] > by0[j]) & (bx1[i] < bx1[j]) & (by1[i] < by1[j])

    # Neighbours of each instance that are not nested inside it.
    b_nested_in_a = strictly_within(pb, pa)
    a_nested_in_b = strictly_within(pa, pb)
    outer_degree = (np.bincount(pa[~b_nested_in_a], minlength=n)
                    + np.bincount(pb[~a_nested_in_b], minlength=n))
    a_in_b = a_nested_in_b & (outer_degree[pa] == 1)
    b_in_a = b_nested_in_a & (outer_degree[pb] == 1)
    dx, dy = cx[pb] - cx[pa], cy[pb] - cy[pa]  # from a to b
    vertical = np.abs(dy) >= np.abs(dx)
    geometric = ~(a_in_b | b_in_a)

    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    pred: list[np.ndarray] = []

    def emit(s: np.ndarray, t: np.ndarray, predicate: str) -> None:
        src.append(s)
        dst.append(t)
        pred.append(np.full(s.shape[0], PREDICATES.index(predicate)))

    emit(pa, pb, "touches")
    emit(pb, pa, "touches")
    emit(pa[a_in_b], pb[a_in_b], "inside")
    emit(pb[b_in_a], pa[b_in_a], "inside")
    a_above = geometric & vertical & (dy > 0)
    b_above = geometric & vertical & ~(dy > 0)
    a_left = geometric & ~vertical & (dx > 0)
    b_left = geometric & ~vertical & ~(dx > 0)
    emit(pa[a_above], pb[a_above], "above")
    emit(pb[a_above], pa[a_above], "below")
    emit(pb[b_above], pa[b_above], "above")
    emit(pa[b_above], pb[b_above], "below")
    emit(pa[a_left], pb[a_left], "left_of")
    emit(pb[a_left], pa[a_left], "right_of")
    emit(pb[b_left], pa[b_left], "left_of")
    emit(pa[b_left], pb[b_left], "right_of")

    s = np.concatenate(src)
    t = np.concatenate(dst)
    p = np.concatenate(pred)
    order = np.lexsort((p, t, s))
    s, t, p = s[order], t[order], p[order]
    if adjacency is None:
        weight = np.ones(s.shape[0])
    else:
        weight = adjacency[inst_cls[s], inst_cls[t]]
    return s, t, p, weight
