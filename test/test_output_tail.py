"""The export module's output tail (casseg_ros/model/output_tail.py) against the computation it
replaced: the whole K-map upsampled at once, then argmax, softmax and the mean probabilities."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from casseg_ros.model import output_tail
from casseg_ros.model.output_tail import BAND_BYTES, band_rows, segmentation_tail
from model_factory import tiny_model

STRIDE = 8


def reference_tail(grid_logits: torch.Tensor, size: tuple[int, int], stride: int,
                   output_size: tuple[int, int] | None = None):
    """The tail as SegmentationPipeline computed it before the bands (commit 1d6f9b8), written out;
    with the gap between the two largest logits of each pixel and the first class within NEAR_TIE
    of the largest."""
    grid_h, grid_w = grid_logits.shape[-2:]
    if output_size is None:
        logits = F.interpolate(grid_logits, size=(grid_h * stride, grid_w * stride), mode="bilinear",
                               align_corners=False)[..., : size[0], : size[1]]
    else:
        logits = F.interpolate(grid_logits, size=output_size, mode="bilinear", align_corners=False)
    probs = logits.softmax(1)
    confidence, class_ids = probs.max(1)
    top2 = logits.topk(min(2, logits.shape[1]), dim=1).values
    gap = top2[:, 0] - top2[:, -1]
    first_near_max = (logits >= top2[:, :1] - NEAR_TIE).int().argmax(1).to(torch.int32)
    return (class_ids.to(torch.int32), confidence, probs.mean(dim=(2, 3))), (gap, first_near_max)


def grid_logits(batch: int, k: int, grid: tuple[int, int], seed: int, ties: bool = False) -> torch.Tensor:
    """Random stride-s logits at the head's scale (10 · cosine); ``ties``: classes K//2 .. 2(K//2)-1
    copies of the first K//2 (an odd K's last class far below), so every top class has an exact twin
    on the grid (and mostly after the upsampling) and the argmax's first-index rule decides."""
    generator = torch.Generator().manual_seed(seed)
    values = 10 * (2 * torch.rand(batch, k, *grid, generator=generator) - 1)
    if ties:
        half = k // 2
        values[:, half: 2 * half] = values[:, :half]
        values[:, 2 * half:] = -20.0
    return values


# The channels-last upsampling kernel rounds differently from the NCHW one (an ulp or two: <= 2e-6
# on logits of +-10), so two classes closer than this may swap; any other differing id is a fault.
NEAR_TIE = 1e-5


def assert_same_tail(got, reference, k: int, exact_ties: bool = False) -> None:
    """``got`` equals the reference tail: every class id of a pixel whose top two classes are more
    than NEAR_TIE apart (``exact_ties``: at the others the first class within NEAR_TIE of the top:
    the reference's upsampling kernel itself rounds twin channels an ulp apart), confidence and
    class scores to 2e-6."""
    (want_ids, want_confidence, want_scores), (gap, first_near_max) = reference
    ids, confidence, scores = got
    assert ids.dtype == torch.int32 and ids.shape == want_ids.shape
    near_tie = gap <= NEAR_TIE
    differ = (ids != want_ids) & ~near_tie
    if exact_ties:
        differ |= (ids != first_near_max) & near_tie
    assert not differ.any(), f"K={k}: {differ.float().mean():.2e} of the class ids differ"
    torch.testing.assert_close(confidence, want_confidence, rtol=0, atol=2e-6)
    assert scores.shape == want_scores.shape == (ids.shape[0], k)
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=2e-6)


@pytest.mark.parametrize("k", [2, 19, 150])
@pytest.mark.parametrize("rows", [1, 2, 3, None])
@pytest.mark.parametrize("stride", [4, 8])
def test_banded_tail_equals_the_whole_map(k: int, rows: int | None, stride: int) -> None:
    # a 50 x 70 input: the grid has a padding cell, rows and columns are cropped, the last band is short
    size = (50, 70)
    logits = grid_logits(2, k, (math.ceil(50 / stride), math.ceil(70 / stride)), seed=k)
    with torch.inference_mode():
        assert_same_tail(segmentation_tail(logits.clone(), size, stride, rows=rows),
                         reference_tail(logits, size, stride), k)


@pytest.mark.parametrize("rows", [1, 2])
def test_chunks_of_the_column_pass_join_exactly(rows: int, monkeypatch) -> None:
    # a budget of ~4 upsampled grid rows: the column pass runs in chunks, each with its halo rows
    k, size = 19, (50, 70)
    monkeypatch.setattr(output_tail, "BAND_BYTES", 4 * 2 * k * 70 * 4)
    logits = grid_logits(2, k, (math.ceil(50 / STRIDE), math.ceil(70 / STRIDE)), seed=7)
    with torch.inference_mode():
        assert_same_tail(segmentation_tail(logits.clone(), size, STRIDE, rows=rows),
                         reference_tail(logits, size, STRIDE), k)


@pytest.mark.parametrize("k", [2, 19, 150])
def test_ties_go_to_the_first_class_as_before(k: int) -> None:
    logits = grid_logits(1, k, (6, 8), seed=100 + k, ties=True)
    with torch.inference_mode():
        got = segmentation_tail(logits.clone(), (48, 64), STRIDE, rows=2)
        reference = reference_tail(logits, (48, 64), STRIDE)
    assert (reference[1][0] <= NEAR_TIE).float().mean() > 0.9  # most top classes tie: the first-index rule decides
    assert_same_tail(got, reference, k, exact_ties=True)


@pytest.mark.parametrize("k", [2, 19, 150])
def test_tail_to_another_size_equals_the_whole_map(k: int) -> None:
    # the in-graph resize: the 6 x 8 grid of a 48 x 64 model input, stretched to a 61 x 77 camera
    logits = grid_logits(1, k, (6, 8), seed=200 + k)
    with torch.inference_mode():
        assert_same_tail(segmentation_tail(logits.clone(), (48, 64), STRIDE, output_size=(61, 77)),
                         reference_tail(logits, (48, 64), STRIDE, output_size=(61, 77)), k)


def test_bands_stay_within_the_budget() -> None:
    logits = torch.zeros(1, 150, 64, 128)  # K = 150 at 512 x 1024
    rows = band_rows(logits, STRIDE, 1024)
    band_bytes = rows * STRIDE * 150 * 1024 * 4  # a band's upsampled logits
    assert rows >= 1 and band_bytes <= BAND_BYTES
    assert band_rows(torch.zeros(1, 2, 64, 128), STRIDE, 1024) >= 64  # two classes: one band for the frame


def test_export_module_matches_the_reference_on_a_model() -> None:
    """The export module's outputs against the reference tail on the model's own grid logits."""
    model = tiny_model()
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 40, 56, 3), dtype=np.uint8))
    with torch.inference_mode():
        ids, confidence, scores, _ = model.export_module()(image)
        grid = model(model.normalize_uint8(image), upsample=False).grid_logits
        want = reference_tail(grid, (40, 56), model.config.output_stride)
    assert_same_tail((ids, confidence, scores), want, model.num_classes)
