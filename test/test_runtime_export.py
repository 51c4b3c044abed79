"""casseg-export: deterministic ONNX (same checkpoint -> same bytes), opset/static shape/checker,
parity report on an image, clean CLI errors (exit 2, no traceback)."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from casseg_ros.export.cli import main
from casseg_ros.export.parity import make_test_pattern
from casseg_ros.model.checkpoint import save_checkpoint
from casseg_ros.runtime.model_export import export_checkpoint, onnx_metadata
from casseg_ros.runtime.onnx_export import export_onnx
from file_modes import mode, umask
from model_factory import tiny_model

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
SIZE = (64, 128)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("c") / "full.safetensors", tiny_model(num_classes=5))


def _sha(p) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.mark.slow
def test_export_is_deterministic(ckpt, tmp_path):
    a, _ = export_checkpoint(ckpt, tmp_path / "a.onnx", SIZE)
    # something else traced in between must not change names/bytes of the next export
    export_onnx(torch.nn.Conv2d(3, 4, 3), (torch.zeros(1, 3, 8, 8),), tmp_path / "other.onnx", ["x"], ["y"])
    b, _ = export_checkpoint(ckpt, tmp_path / "b.onnx", SIZE)
    assert _sha(a) == _sha(b)
    proto = onnx.load(str(a))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, *SIZE, 3]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in proto.graph.output] == ["class_ids", "confidence", "class_scores", "adjacency"]
    assert proto.producer_name == "casseg_ros" and not proto.doc_string
    meta = onnx_metadata(a)
    assert meta["casseg.checkpoint_sha256"] == _sha(ckpt)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp files


@pytest.mark.slow
def test_export_deterministic_across_processes(ckpt, tmp_path):
    here, _ = export_checkpoint(ckpt, tmp_path / "here.onnx", SIZE)
    code = ("import sys; sys.path[:0] = [%r, %r]\n"
            "from casseg_ros.runtime.model_export import export_checkpoint\n"
            "export_checkpoint(%r, %r, (64, 128))\n") % (str(REPO), str(REPO / "test"), str(ckpt),
                                                         str(tmp_path / "there.onnx"))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, capture_output=True)
    assert _sha(here) == _sha(tmp_path / "there.onnx")


@pytest.mark.slow
def test_cli_exports_validates_and_reports(ckpt, tmp_path, capsys):
    image = tmp_path / "street.png"
    rgb = cv2.resize(make_test_pattern(120, 200), (200, 120))  # other size than the export: resized
    cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / "m.onnx"
    with umask(0o022):
        rc = main([str(ckpt), "-o", str(out), "--input-size", *map(str, SIZE), "--image", str(image),
                   "--json", str(tmp_path / "r.json")])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert mode(out) == mode(tmp_path / "r.json") == 0o644  # readable by other users and containers
    assert out.is_file() and "parity: ok" in text and "checker: ok" in text
    assert f"sha256: {_sha(out)}" in text
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["equal_pixels_percent"] >= 99.9 and report["max_abs_confidence"] <= 1e-3
    assert report["image"] == str(image)


@pytest.mark.slow
def test_cli_default_output_is_out_export_not_beside_the_checkpoint(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(ckpt), "--input-size", *map(str, SIZE)]) == 0, capsys.readouterr().out
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.onnx")] == ["out/export/full-64x128.onnx"]
    assert not list(ckpt.parent.glob("*.onnx"))


def test_cli_errors_are_messages_not_tracebacks(ckpt, tmp_path, capsys):
    assert main([str(tmp_path / "missing.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert main([str(bad), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("casseg-export:") and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA (the error path)")
def test_cli_tensorrt_without_cuda_fails_before_exporting(ckpt, tmp_path, capsys):
    assert main([str(ckpt), "-o", str(tmp_path / "t.onnx"), "--tensorrt"]) == 2
    err = capsys.readouterr().err
    assert "backend 'tensorrt' needs" in err and "--tensorrt" in err
    assert not (tmp_path / "t.onnx").exists()  # failed before exporting


@pytest.mark.slow
def test_console_entry_exit_code_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "casseg_ros.export.cli", str(tmp_path / "nope.safetensors")],
                          capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "checkpoint not found" in proc.stderr


@pytest.mark.slow
def test_export_takes_any_class_count(ckpt, tmp_path):
    """One export, any vocabulary: (K,E) class embeddings are the second input, K dynamic."""
    import onnxruntime as ort

    from casseg_ros.model.checkpoint import load_checkpoint
    from model_factory import random_vocabulary

    path, _ = export_checkpoint(ckpt, tmp_path / "k.onnx", SIZE)
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in onnx.load(str(path)).graph.input}
    assert inputs == {"images": [1, *SIZE, 3], "class_embeddings": ["classes", 384]}
    assert onnx_metadata(path)["casseg.vocabulary"]  # the default vocabulary travels with the graph
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = load_checkpoint(ckpt).export_module()
    image = make_test_pattern(*SIZE)[None]
    for k in (1, 2, 9, 40):
        classes = random_vocabulary(k, seed=k).embeddings
        ids, conf, scores, adj = session.run(None, {"images": image, "class_embeddings": classes})
        with torch.no_grad():
            t_ids, t_conf, t_scores, t_adj = module(torch.from_numpy(image), torch.from_numpy(classes))
        assert scores.shape == (1, k) and adj.shape == (1, k, k)
        assert (ids == t_ids.numpy()).mean() >= 0.999
        assert np.abs(scores - t_scores.numpy()).max() <= 1e-4 and np.abs(adj - t_adj.numpy()).max() <= 1e-4
