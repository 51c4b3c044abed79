"""The ~/set_vocabulary request check (no DDS): the limits of the mask encoding, duplicates, long requests."""
from __future__ import annotations

import pytest

from casseg_ros.ros.vocabulary_request import BadVocabularyRequest, check_request


def test_up_to_65535_classes_pass_and_one_more_is_refused_before_anything_else():
    names = [f"class {i}" for i in range(65535)]  # a mono16 mask: ids 0..65534 beside the unknown 65535
    check_request(names, [], [])
    with pytest.raises(BadVocabularyRequest, match="65536 classes: a mask holds at most 65535"):
        check_request(names + [""], [], [])  # the count is the first answer, not the blank name


def test_duplicates_of_a_long_request_are_named():
    names = [f"class {i}" for i in range(65534)] + ["class 7"]
    with pytest.raises(BadVocabularyRequest, match=r"duplicate class names: \['class 7'\]"):
        check_request(names, [], [])
