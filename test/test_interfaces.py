"""The stand-in vision_msgs is wire-compatible with upstream: same type hashes (RIHS01).

The reference hashes were computed by building upstream ros-perception/vision_msgs 4.1.1 with
the same rosidl (Kilted wheels) and reading its generated type descriptions; all 16 messages
matched. A field renamed or retyped in interfaces/vision_msgs changes the hash and fails here.
"""
from __future__ import annotations

import json

import pytest
from vision_msgs.msg import LabelInfo, VisionClass

from casseg_ros.resources import share_directories

UPSTREAM_RIHS01 = {
    "vision_msgs/msg/LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "vision_msgs/msg/VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "vision_msgs/msg/Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
}


@pytest.mark.parametrize("type_name", sorted(UPSTREAM_RIHS01))
def test_vision_msgs_type_hashes_equal_upstream(type_name):
    share = next(d for d in share_directories("vision_msgs"))
    description = json.loads((share / "msg" / f"{type_name.rsplit('/', 1)[1]}.json").read_text())
    hashes = {h["type_name"]: h["hash_string"] for h in description["type_hashes"]}
    assert hashes[type_name] == UPSTREAM_RIHS01[type_name]


def test_label_info_fields_as_upstream():
    msg = LabelInfo(class_map=[VisionClass(class_id=65535, class_name="unlabelled")], threshold=0.5)
    assert list(LabelInfo.get_fields_and_field_types()) == ["header", "class_map", "threshold"]
    assert VisionClass.get_fields_and_field_types() == {"class_id": "uint16", "class_name": "string"}
    assert msg.class_map[0].class_id == 65535
