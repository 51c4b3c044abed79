"""The full model exports to ONNX (opset ≥ 17, static shape) and ONNX Runtime agrees with PyTorch."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from casseg_ros.model import LogitsPipeline
from casseg_ros.runtime.onnx_export import export_onnx
from model_factory import tiny_model

torch.set_num_threads(1)


@pytest.mark.slow
@pytest.mark.parametrize("switches", [dict(fusion=True, graph=True), dict(fusion=False, graph=False),
                                      dict(fusion=True, graph=True, graph_nodes="regions", graph_edges="both")])
def test_onnx_logits_match_pytorch(tmp_path, switches):
    model = tiny_model(num_classes=5, **switches)
    # 72×104 is not a multiple of 32: padding and cropping are inside the exported graph too.
    image = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (1, 72, 104, 3), dtype=np.uint8))
    path = export_onnx(LogitsPipeline(model), (image,), tmp_path / "m.onnx", ["images"], ["logits"], opset=17)
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 72, 104, 3]  # static
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {"images": image.numpy()})[0]
    with torch.no_grad():
        torch_logits = LogitsPipeline(model)(image).numpy()
    assert onnx_logits.shape == torch_logits.shape == (1, 5, 72, 104)
    assert np.abs(onnx_logits - torch_logits).max() <= 1e-3
