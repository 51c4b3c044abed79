"""A backend whose forward pass returns one precomputed result: what comes after the model, alone.

The tests of the host path and the benchmarks that time it (`bench/host.py`, `bench/node.py`)
run the product's own `Backend.infer` and everything after it around this stand-in, so only the
model's forward pass is left out. Without `input_size` it is a graph that outputs at the camera's
resolution (an export with --resize-in-graph, a GPU deployment): nothing is resized. With
`input_size` it is a model of that size behind the host resizes: the image is resized down and
the class ids and confidence back up, as for a real backend; `result` is then at `input_size`.
"""
from __future__ import annotations

import numpy as np

from casseg_ros.text.vocabulary import Vocabulary

from .base import Backend, InferenceResult


class CannedBackend(Backend):
    name = "canned"

    def __init__(self, result: InferenceResult, input_size: tuple[int, int] | None = None,
                 vocabulary: Vocabulary | None = None) -> None:
        super().__init__(None, input_size=input_size)
        self.result = result
        self._canned_vocabulary = vocabulary  # None: the pipeline must be given its ClassLabels

    def _load(self) -> None:
        self._vocabulary = self._canned_vocabulary

    def _run(self, images: np.ndarray) -> InferenceResult:
        return self.result  # no runtime call: last_runtime_s stays 0, all of `infer` is host time
