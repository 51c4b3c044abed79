"""The export module's output tail: stride-s logits → class ids, confidence and class scores at the
image's resolution (``SegmentationPipeline``; every backend runs it, in PyTorch or exported).

What grows with the class count K is this tail: K logit maps at full resolution (K = 150 at
512x1024: 315 MB). In PyTorch on a CPU, that tensor cost more than its arithmetic: a fresh
allocation that large is a new mapping whose pages fault in on first touch every frame, and an
argmax over the channel axis of an NCHW tensor takes the strided reduction (190 ms for K = 150 at
512x1024, 40 ms over a contiguous class axis). So the eager tail works in bands of rows, each a few
stride-s grid rows upsampled in channels-last layout (the K logits of a pixel contiguous) and
reduced at once: every band is under glibc's mmap threshold (its memory is reused from band to
band and frame to frame, warm in the cache) and every reduction runs over a contiguous axis.

The bands are exact: bilinear upsampling by an integer factor s (half-pixel, no corner alignment)
reads, for output rows [a·s + s/2, b·s + s/2), grid rows a..b only, with the same weights wherever
the rows are cut out; so a band upsampled from those grid rows alone and cropped to its own rows
equals those rows of the whole map. What is not bit for bit is the layout: PyTorch's channels-last
upsampling kernel rounds an ulp or two apart from the NCHW one (<= 2e-6 on logits of +-10), and the
sums over K add in another order, so confidence moves by < 1e-6 and two classes closer than that
may swap (none did on 2.4 M demo-weight pixels; test/test_output_tail.py checks the tail against
the unbanded NCHW computation). Exported or compiled graphs take one band, the whole map: a traced loop
would fix the band count in the graph, ONNX has no memory layout, and ONNX Runtime reuses its
buffers through its own arena. So do a CUDA device (whose caching allocator reuses memory; not
measured here: no GPU) and an upsampling to another size (``output_size``, the in-graph resize),
whose scale factor puts band edges between grid rows.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

# Below glibc's largest dynamic mmap threshold (32 MiB on 64-bit): after the first band is freed,
# allocations of its size come from the heap, so no band faults its pages in again.
BAND_BYTES = 30 << 20


def upsample_logits(grid_logits: torch.Tensor, size: Sequence[int], stride: int,
                    output_size: Optional[Sequence[int]] = None) -> torch.Tensor:
    """(B,K,gh,gw) stride-s logits → (B,K,H,W) at the input size ``size`` = (H, W), or at
    ``output_size`` = (H', W'): the input stretched to H'xW' (needs H, W multiples of s)."""
    h, w = int(size[0]), int(size[1])
    if output_size is not None:
        # The grid then covers exactly H x W (no padding cell), so half-pixel sampling of the grid at
        # H'xW' is the composition "upsample to H x W, then stretch to H'xW'" with one interpolation.
        if h % stride or w % stride:
            raise ValueError(f"output_size needs an input size that is a multiple of the output stride "
                             f"{stride}, got {h}x{w}")
        return F.interpolate(grid_logits, size=output_size, mode="bilinear", align_corners=False)
    # Upsample on the embedding grid's own extent, then crop: keeps pixels aligned for any H, W.
    grid_h, grid_w = grid_logits.shape[-2:]
    logits = F.interpolate(grid_logits, size=(grid_h * stride, grid_w * stride), mode="bilinear",
                           align_corners=False)
    if (grid_h * stride, grid_w * stride) != (h, w):  # no Slice node when nothing is cropped: ONNX
        logits = logits[..., :h, :w]                   # Runtime copies all K maps for one
    return logits


def tail_statistics(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,K,H,W) logits (overwritten) → class ids (B,1,H,W) int64, confidence (B,1,H,W) = the max
    softmax probability, and the per-class sum of the softmax probabilities over the pixels (B,K)."""
    # Softmax written out (elementwise Exp / ReduceSum in an exported graph): ONNX Runtime's
    # Softmax over the channel axis of a full-resolution map transposes it and took ~40 % of
    # the whole CPU frame. The max softmax probability is 1 / sum(exp(logit - max logit)).
    # Each of the K maps is read as few times as possible: in place (nothing reads the logits
    # afterwards; a new tensor that size costs an allocation), the max logit gathered at the
    # argmax instead of a second reduction over K (ONNX's ReduceMax beside ArgMax), and the
    # probability sums as one matrix-vector product instead of a K-map quotient to add up.
    class_ids = logits.argmax(1, keepdim=True)
    exp = logits.sub_(logits.gather(1, class_ids)).exp_()
    inverse_total = exp.sum(1, keepdim=True).reciprocal()
    class_sums = torch.bmm(exp.flatten(2), inverse_total.flatten(2).transpose(1, 2))[..., 0]
    return class_ids, inverse_total, class_sums


def band_rows(grid_logits: torch.Tensor, stride: int, budget: int = BAND_BYTES) -> int:
    """Grid rows per band: the band's upsampled slice (its rows and one halo row) within ``budget``."""
    batch, k, _, grid_w = grid_logits.shape
    row_bytes = batch * k * stride * grid_w * stride * grid_logits.element_size()
    return max(1, budget // row_bytes - 1)


def source_rows(top: int, bottom: int, stride: int, grid_h: int) -> tuple[int, int]:
    """The grid rows [first, last) that half-pixel bilinear upsampling by ``stride`` reads for the
    output rows [top, bottom): output row y samples the grid at (y + 0.5) / s - 0.5, between the
    rows floor of that and the next one (both clamped to the grid)."""
    first = max(0, math.floor((top + 0.5) / stride - 0.5))
    last = min(grid_h, math.floor((bottom - 0.5) / stride - 0.5) + 2)
    return first, last


def tail_outputs(class_ids: torch.Tensor, confidence: torch.Tensor,
                 class_sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``tail_statistics``'s outputs over the whole image → (B,H,W) int32 ids, (B,H,W) confidence,
    (B,K) mean probabilities."""
    pixels = class_ids.shape[-2] * class_ids.shape[-1]
    return class_ids[:, 0].to(torch.int32), confidence[:, 0], class_sums / pixels


def whole_map_tail(grid_logits: torch.Tensor, size: Sequence[int], stride: int,
                   output_size: Optional[Sequence[int]] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tail in one band: the K maps upsampled at once (the exported graph's ops)."""
    return tail_outputs(*tail_statistics(upsample_logits(grid_logits, size, stride, output_size)))


def banded_tail(grid_logits: torch.Tensor, size: Sequence[int], stride: int,
                rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``whole_map_tail`` about ``rows`` grid rows (``rows``·s image rows) at a time: each band's
    ``tail_statistics``, the ids and confidences concatenated, the probability sums added.

    Bands end half a cell past a grid row (y = a·s + s/2), where an output row's two source rows
    change: a band of ``rows`` rows then reads ``rows`` + 1 grid rows. Upsampling that slice on its
    own gives the band's rows the same source positions, neighbours and weights as the whole map's
    (s is 4 or 8, so the positions (y + 0.5)/s - 0.5 are exact in floating point either way)."""
    h, w = int(size[0]), int(size[1])
    grid_h = grid_logits.shape[-2]
    grid = grid_logits.contiguous(memory_format=torch.channels_last)  # a pixel's K logits contiguous
    edges = [0, *range(rows * stride + stride // 2, h, rows * stride), h]
    ids, confidence, class_sums = [], [], None
    for top, bottom in zip(edges[:-1], edges[1:]):
        first, last = source_rows(top, bottom, stride, grid_h)
        slice_logits = grid[:, :, first:last]
        upsampled = F.interpolate(slice_logits, size=((last - first) * stride, slice_logits.shape[-1] * stride),
                                  mode="bilinear", align_corners=False)
        offset = first * stride
        band_ids, band_confidence, band_sums = tail_statistics(upsampled[:, :, top - offset:bottom - offset, :w])
        ids.append(band_ids)
        confidence.append(band_confidence)
        class_sums = band_sums if class_sums is None else class_sums + band_sums
    return tail_outputs(torch.cat(ids, 2), torch.cat(confidence, 2), class_sums)


def traced() -> bool:
    """Whether this forward is being traced into a graph (ONNX export, torch.compile)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def segmentation_tail(grid_logits: torch.Tensor, size: Sequence[int], stride: int,
                      output_size: Optional[Sequence[int]] = None,
                      rows: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,K,gh,gw) stride-s logits of an input of ``size`` (H, W) → class ids (B,H,W) int32,
    confidence (B,H,W) (max softmax probability) and class scores (B,K) (mean softmax probability),
    at H x W, or at ``output_size`` (see ``upsample_logits``). ``rows``: grid rows per band (None:
    ``band_rows``); the whole map in one band when traced, with ``output_size``, or off the CPU (a
    GPU's caching allocator reuses its memory, and bands would only add kernel launches)."""
    if output_size is None and grid_logits.device.type == "cpu" and not traced():
        return banded_tail(grid_logits, size, stride, rows or band_rows(grid_logits, stride))
    return whole_map_tail(grid_logits, size, stride, output_size)
