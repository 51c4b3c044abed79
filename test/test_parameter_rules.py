"""One validation rule per setting: the node's parameters and the command-line options refuse the
same values in the same words."""
from __future__ import annotations

import pytest

from casseg_ros.export.cli import main as export_main
from casseg_ros.parameter_rules import RULES, problem, upgrade_input_size_syntax
from casseg_ros.replay.cli import main as replay_main
from casseg_ros.ros.parameters import param_specs


def test_the_node_descriptors_take_their_ranges_from_the_rules():
    ranged = 0
    for name, _, descriptor in param_specs():
        ranges = list(descriptor.integer_range) + list(descriptor.floating_point_range)
        if ranges:
            rule = RULES[name]
            assert (ranges[0].from_value, ranges[0].to_value) == (rule.low, rule.high), name
            ranged += 1
    assert ranged == sum(r.low is not None for r in RULES.values()) == 15  # a new ranged parameter counts here


@pytest.mark.parametrize("name,value,message", [
    ("score_threshold", -0.5, "score_threshold must be in [0.0, 1.0], got -0.5"),
    ("min_instance_area", 0, "min_instance_area must be in [1, 67108864], got 0"),
    ("backend", "caffe", "backend must be one of 'torch', 'onnxruntime', 'tensorrt', 'openvino', 'auto', got 'caffe'"),
    ("input_height", 16, "input_height must be 0 (native size) or >= 32, got 16"),
    ("scene_graph_stride", 2.5, "scene_graph_stride must be an integer, got 2.5"),
])
def test_a_refusal_is_one_line_naming_setting_value_and_range(name, value, message):
    assert problem(name, value) == message


@pytest.mark.parametrize("argv,message", [
    (["--score-threshold", "-1"], "argument --score-threshold: score_threshold must be in [0.0, 1.0], got -1.0"),
    (["--min-instance-area", "0"], "min_instance_area must be in [1, 67108864], got 0"),
    (["--backend", "caffe"], "argument --backend: backend must be one of 'torch', 'onnxruntime', 'tensorrt'"),
    (["--device", "gpu"], "device must be cpu, cuda or cuda:N, got 'gpu'"),
    (["--input-size", "16", "16"], "input_height must be 0 (native size) or >= 32, got 16"),
    (["--input-size", "96", "0"], "input_height and input_width must both be 0 (native size) or both > 0"),
])
def test_casseg_replay_refuses_what_the_node_refuses(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        replay_main([str(tmp_path / "bag.mcap"), "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # argparse's usage, then the one-line error
    assert exit_.value.code == 2 and last.startswith("casseg-replay: error: ") and message in last
    assert not (tmp_path / "out").exists()


def test_casseg_export_checks_its_input_size_with_the_same_rules(tmp_path, capsys):
    for size, message in ((["16", "64"], "input_height must be 0 (native size) or >= 32, got 16"),
                          (["0", "0"], "--input-size must be a size here")):
        with pytest.raises(SystemExit) as exit_:
            export_main([str(tmp_path / "m.safetensors"), "--input-size", *size])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_one_input_size_syntax_the_old_one_with_a_note(capsys):
    assert upgrade_input_size_syntax(["bag", "--input-size", "512", "1024"], "casseg-replay") == \
        ["bag", "--input-size", "512", "1024"]
    assert capsys.readouterr().err == ""
    for old, new in ((["--input-size", "512x1024"], ["512", "1024"]), (["--input-size=96x192"], ["96", "192"]),
                     (["--input-size", "native"], ["0", "0"])):
        assert upgrade_input_size_syntax(["bag", *old, "--no-progress"], "casseg-replay") == \
            ["bag", "--input-size", *new, "--no-progress"]
        assert "deprecated; write --input-size " + " ".join(new) in capsys.readouterr().err
