"""Hand-off to the official Cityscapes evaluator (cityscapesscripts), run offline on PNGs.

Every path the evaluator uses is set on its ``args`` object, so no environment variable is needed.
"""
from __future__ import annotations

import glob
import os

import cv2
import numpy as np
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

from casseg_ros.fileio import atomic_write_bytes

from .datasets.cityscapes import train_id_to_id_lut

__all__ = ["run_cityscapes_evaluator", "write_cityscapes_prediction"]


def write_cityscapes_prediction(pred_train_ids: np.ndarray, sample_id: str, results_dir: str) -> str:
    """Write ``<results_dir>/<city>_<seq>_<frame>_pred_labelIds.png`` (official label ids)."""
    path = os.path.join(results_dir, f"{sample_id}_pred_labelIds.png")
    ids = train_id_to_id_lut()[np.clip(pred_train_ids, 0, 255).astype(np.uint8)]
    ok, png = cv2.imencode(".png", ids)
    if not ok:
        raise RuntimeError(f"cannot encode {path} as PNG")
    atomic_write_bytes(path, png.tobytes())
    return path


def run_cityscapes_evaluator(cityscapes_root: str, results_dir: str, split: str = "val",
                             export_json: str | None = None) -> dict:
    """Run ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling`` offline on
    ``results_dir``; returns its result dict ('averageScoreClasses', 'classScores', ...)."""
    args = ev.args
    args.cityscapesPath = cityscapes_root
    args.groundTruthSearch = os.path.join(cityscapes_root, "gtFine", split, "*", "*_gtFine_labelIds.png")
    args.predictionPath = results_dir
    args.predictionWalk = None
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    args.JSONOutput = export_json is not None
    args.exportFile = export_json or os.path.join(results_dir, "resultPixelLevelSemanticLabeling.json")
    gts = sorted(glob.glob(args.groundTruthSearch))
    if not gts:
        raise FileNotFoundError(f"no ground truth matched {args.groundTruthSearch}")
    # nIoU needs *_instanceIds.png and the evaluator's np.in1d (removed in NumPy 2.4); mIoU needs neither
    args.evalInstLevelScore = hasattr(np, "in1d") and all(
        os.path.isfile(g.replace("labelIds", "instanceIds")) for g in gts)
    args.evalPixelAccuracy = False
    preds = [ev.getPrediction(args, g) for g in gts]
    return ev.evaluateImgLists(preds, gts, args)
