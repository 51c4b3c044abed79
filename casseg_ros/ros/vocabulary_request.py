"""casseg_msgs/srv/SetVocabulary request -> a Vocabulary with fresh text embeddings (or a clear error).

Runs on the node's embedding thread (`vocabulary_swap`), never on the executor or the frame path:
embedding the names can take a moment (the local MiniLM on CPU, or an HTTP round trip to OpenAI).
The swap itself is the worker's job.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

import numpy as np

from casseg_ros.perception.mask import UNKNOWN_MONO16
from casseg_ros.text import EmbeddingProvider, Vocabulary, build_vocabulary


class BadVocabularyRequest(ValueError):
    """The request cannot become a vocabulary; the message is what the caller is told."""


def check_request(names: list[str], descriptions: list[str], colors: list[Any]) -> None:
    if not names:
        raise BadVocabularyRequest("class_names is empty")
    if len(names) > UNKNOWN_MONO16:  # ids 0..65534 beside the unknown id of a mono16 mask
        raise BadVocabularyRequest(f"{len(names)} classes: a mask holds at most {UNKNOWN_MONO16}")
    if any(not n.strip() for n in names):
        raise BadVocabularyRequest("class names must not be empty")
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)  # linear: requests can be long
    if duplicates:
        raise BadVocabularyRequest(f"duplicate class names: {duplicates}")
    for field_name, values in (("descriptions", descriptions), ("colors", colors)):
        if values and len(values) != len(names):
            raise BadVocabularyRequest(f"{len(values)} {field_name} for {len(names)} class names "
                                       f"(give none or one per name)")


class ParsedRequest(NamedTuple):
    """A checked request: its names, descriptions (None: none given) and colours (None: by name)."""

    names: list[str]
    descriptions: list[str] | None
    palette: np.ndarray | None


def parse_request(request: Any) -> ParsedRequest:
    """A SetVocabulary request checked (`check_request`); BadVocabularyRequest with the reason."""
    names, descriptions = [str(n) for n in request.class_names], [str(d) for d in request.descriptions]
    check_request(names, descriptions, list(request.colors))
    palette = None
    if request.colors:
        palette = np.array([[c.r, c.g, c.b] for c in request.colors], np.float64)
        palette = np.clip(np.round(palette * 255.0), 0, 255).astype(np.uint8)
    return ParsedRequest(names, descriptions or None, palette)


def embed_request(parsed: ParsedRequest, provider: str | EmbeddingProvider) -> Vocabulary:
    """The checked request's names embedded with `provider` (a name, or one loaded already);
    BadVocabularyRequest on the provider's failure (its message kept)."""
    try:
        return build_vocabulary(parsed.names, provider, parsed.descriptions, palette=parsed.palette)
    except Exception as exc:  # noqa: BLE001 - any provider failure (missing model, network, quota) is an answer
        name = provider.name if isinstance(provider, EmbeddingProvider) else provider
        raise BadVocabularyRequest(f"text provider {name!r} failed: {type(exc).__name__}: {exc}") from exc


def vocabulary_from_request(request: Any, provider: str | EmbeddingProvider) -> Vocabulary:
    """Validate the request and embed its names with `provider`. BadVocabularyRequest on any
    problem, the provider's failure included."""
    return embed_request(parse_request(request), provider)
