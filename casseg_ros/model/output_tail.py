"""The export module's output tail: stride-s logits → class ids, confidence and class scores at the
image's resolution (``SegmentationPipeline``; every backend runs it, in PyTorch or exported).

What grows with the class count K is this tail: K logit maps at full resolution (K = 150 at
512x1024: 315 MB), every pass over them memory-bound. So the eager CPU tail works in bands of a
few grid rows whose K maps fit in the cache (``BAND_BYTES``) and upsamples each band itself
(``banded_tail``): PyTorch's own bilinear kernel took 267 ms for K = 150 channels-last (127 ms
NCHW), and its argmax over K is a scalar loop (~90 ms) or a strided one (NCHW); written as lerps
and vectorised reductions across the K maps, the whole tail takes ~130 ms (Zen 3, 2 threads).

The bands are exact: bilinear upsampling by an integer factor s (half-pixel, no corner alignment)
gives output row a·s + r the blend of grid rows a and a ± 1 with weights that depend on r only,
so a band of grid rows [a, b) needs rows a-1 .. b, with the same weights wherever it is cut.
What is not bit for bit is the arithmetic: a lerp rounds an ulp apart from PyTorch's kernel, and
the sums over K add in another order, so confidence moves by < 1e-6 and two classes closer than
that may swap (test/test_output_tail.py checks the tail against the unbanded NCHW computation).
Exported or compiled graphs take one band, the whole map: a traced loop would fix the band count
in the graph, ONNX has no memory layout, and ONNX Runtime reuses its buffers through its own
arena. So do a CUDA device (not measured here: no GPU) and an upsampling to another size
(``output_size``, the in-graph resize), whose scale factor is not an integer.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

# A band's K logit maps (whole grid rows: s image rows each) and a column pass's chunk: a few MiB,
# in the cache through the band's K-wide passes, far below glibc's mmap threshold (their memory
# comes from the heap, not fresh pages). Zen 3, K = 150 at 512x1024, one process: bands of a grid
# row (4.9 MB) 128 ms; bands of 0.5-4 MiB of image rows 144-212 ms (more, smaller ops).
BAND_BYTES = 8 << 20
LOG2_E = 1.0 / math.log(2.0)


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


def band_rows(grid_logits: torch.Tensor, stride: int, width: Optional[int] = None,
              budget: int = BAND_BYTES) -> int:
    """Grid rows per band: the band's ``rows``·s image rows of K logits within ``budget``
    (``width``: the image's; the grid's extent when not given)."""
    batch, k, _, grid_w = grid_logits.shape
    row_bytes = batch * k * stride * (width or grid_w * stride) * grid_logits.element_size()
    return max(1, budget // row_bytes)


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


def partner_weights(stride: int) -> list[tuple[int, float]]:
    """For each offset r = 0..s-1 of an output row (column) inside its grid cell j: the other grid
    cell half-pixel bilinear upsampling by s blends with j (j - 1 before the cell's centre, j + 1
    after it) and that cell's weight |r + 1/2 - s/2| / s; exact in floating point for s = 4, 8."""
    return [(-1 if r < stride // 2 else 1, abs(r + 0.5 - stride / 2) / stride) for r in range(stride)]


def column_pass(padded: torch.Tensor, first: int, last: int, stride: int, width: int) -> torch.Tensor:
    """Grid rows first-1 .. last (edge rows repeated) of ``padded`` (B, K, gh, gw+2), its edge
    columns repeated, upsampled along the columns: (B, K, last-first+2, width)."""
    batch, k, grid_h, padded_w = padded.shape
    grid_w = padded_w - 2
    halo = torch.arange(first - 1, last + 1).clamp_(0, grid_h - 1)
    source = padded.index_select(2, halo)
    columns = torch.empty(batch, k, len(halo), grid_w, stride, dtype=padded.dtype)
    for r, (step, weight) in enumerate(partner_weights(stride)):
        torch.lerp(source[..., 1:-1], source[..., 1 + step:1 + step + grid_w], weight, out=columns[..., r])
    return columns.view(batch, k, len(halo), grid_w * stride)[..., :width]


def banded_tail(grid_logits: torch.Tensor, size: Sequence[int], stride: int,
                rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``whole_map_tail`` ``rows`` grid rows (``rows``·s image rows) at a time.

    The upsampling is written out as its two separable passes, each s lerps between a grid cell
    and its neighbour (``partner_weights``): along the columns for a chunk of grid rows and one
    row on each side (``column_pass``, about BAND_BYTES), then along the rows into each band of
    the chunk; edge cells are repeated, which is PyTorch's clamping of the source index. Every
    reduction over K then runs across the K maps of the band (NCHW: K outer), which vectorises
    over the pixels for any K (Zen 3, 2 threads, K = 9 / 19 / 150 at 512x1024: 12 / 24 / 210 ms
    against 29 / 46 / 219 with a pixel's K logits contiguous). Per band (a few MiB, warm in the
    cache; the bytes that cost are the K-wide passes over it): the max logit m, exp(logit - m)
    in place (as exp2 of base-2 logits: ~1.6x faster than exp, equal to an ulp), its sum (1 / sum
    is the confidence), the probability sums as a matrix-vector product, and the class id as the
    first class whose exp(logit - m) is 1: floor() maps the exponentials to 0/1, times K-1-k, a
    max over K gives the first such k (an argmax over K takes PyTorch's slow strided path). A
    class whose logit is within ~2^-25 below the max rounds to 1 too and, if earlier, wins: less
    than the rounding differences the test already allows (test/test_output_tail.py)."""
    h, w = int(size[0]), int(size[1])
    batch, k, grid_h, grid_w = grid_logits.shape
    dtype = grid_logits.dtype
    grid = grid_logits * LOG2_E                                     # base 2; linear, so before the upsampling
    padded = torch.cat([grid[..., :1], grid, grid[..., -1:]], 3)     # (B, K, gh, gw+2): edge columns repeated
    weights = partner_weights(stride)
    reverse_index = torch.arange(k - 1, -1, -1, dtype=dtype).view(1, k, 1)  # K-1-k: the max picks the first class
    class_ids = torch.empty(batch, h, w, dtype=torch.int32)
    confidence = torch.empty(batch, h, w, dtype=dtype)
    class_sums = torch.zeros(batch, k, dtype=dtype)
    used_rows = math.ceil(h / stride)                                 # grid rows with pixels of the image
    chunk = rows * max(1, (BAND_BYTES // (batch * k * w * grid_logits.element_size()) - 2) // rows)
    full_band = torch.empty(batch, k, rows, stride, w, dtype=dtype)  # every full band's memory, reused
    for chunk_first in range(0, used_rows, chunk):
        chunk_last = min(used_rows, chunk_first + chunk)
        columns = column_pass(padded, chunk_first, chunk_last, stride, w)
        for first in range(chunk_first, chunk_last, rows):
            last = min(used_rows, first + rows)
            n, at = last - first, first - chunk_first + 1                # ``at``: row ``first`` in ``columns``
            band = full_band if n == rows else torch.empty(batch, k, n, stride, w, dtype=dtype)
            for r, (step, weight) in enumerate(weights):
                torch.lerp(columns[:, :, at:at + n], columns[:, :, at + step:at + n + step], weight,
                           out=band[:, :, :, r])
            top, bottom = first * stride, min(h, last * stride)
            logits = band.view(batch, k, n * stride * w)[..., :(bottom - top) * w]  # (B, K, P), rows past the image cut
            exp = logits.sub_(logits.amax(1, keepdim=True)).exp2_()
            inverse_total = exp.sum(1, keepdim=True).reciprocal_()      # (B, 1, P)
            class_sums += torch.bmm(exp, inverse_total.transpose(1, 2))[..., 0]
            last_first = exp.floor_().mul_(reverse_index).amax(1)      # K-1-(first class at the max)
            class_ids[:, top:bottom] = (k - 1 - last_first).view(batch, bottom - top, w)
            confidence[:, top:bottom] = inverse_total.view(batch, bottom - top, w)
    return class_ids, confidence, class_sums / (h * w)


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
        return banded_tail(grid_logits, size, stride, rows or band_rows(grid_logits, stride, int(size[1])))
    return whole_map_tail(grid_logits, size, stride, output_size)
