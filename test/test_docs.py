"""What the docs promise a new user on their first screen."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_first_screen_of_the_readme_says_the_bundled_weights_are_a_synthetic_demo():
    first_screen = "\n".join((REPO / "README.md").read_text().splitlines()[:30])
    for words in ("synthetic", "nine classes", "not a model for your camera", "Reproducing the paper"):
        assert words in first_screen, words


def test_the_shipped_config_says_the_same():
    config = (REPO / "config" / "segment.yaml").read_text()
    assert "produced by training" not in config
    assert "synthetic scenes only" in config and "NOT a model for" in config
