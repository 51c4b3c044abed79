"""`build_vocabulary`: class names -> Vocabulary, through one embedding provider."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from casseg_ros.text.providers import EmbeddingProvider, FileProvider, get_provider
from casseg_ros.text.vocabulary import Vocabulary, l2_normalize

__all__ = ["DEFAULT_TEMPLATE", "DEFAULT_DESCRIPTION_TEMPLATE", "build_vocabulary", "class_prompts"]

# CLIP-style prompt: embedding a short sentence works better than a bare word for
# sentence-embedding models, and keeps all classes in the same linguistic frame.
DEFAULT_TEMPLATE = "a photo of a {name}."
DEFAULT_DESCRIPTION_TEMPLATE = "{name}: {description}"


def class_prompts(names: Sequence[str], descriptions: Sequence[str] | None = None,
                  template: str = DEFAULT_TEMPLATE,
                  description_template: str = DEFAULT_DESCRIPTION_TEMPLATE) -> list[str]:
    """The texts that get embedded, one per class."""
    if descriptions is None:
        return [template.format(name=n) for n in names]
    if len(descriptions) != len(names):
        raise ValueError(f"{len(descriptions)} descriptions for {len(names)} names")
    return [description_template.format(name=n, description=d) for n, d in zip(names, descriptions)]


def build_vocabulary(
    names: Sequence[str],
    provider: str | EmbeddingProvider = "local",
    descriptions: Sequence[str] | None = None,
    *,
    describe: bool = False,
    template: str = DEFAULT_TEMPLATE,
    templates: Sequence[str] | None = None,
    description_template: str = DEFAULT_DESCRIPTION_TEMPLATE,
    palette: np.ndarray | None = None,
    **provider_kwargs: Any,
) -> Vocabulary:
    """Embed class names (or `"{name}: {description}"`) into a Vocabulary.

    `describe=True` asks the provider for a visual description of each class first (the
    `openai` provider's chat model); it is ignored when `descriptions` are given. The `file`
    provider returns the cached vocabulary after checking its names equal `names`.
    `templates` (instead of `template`): prompt ensembling -- each name is embedded in every
    template and its embedding is the L2-normalised mean, so no single phrasing decides it.
    """
    names = [str(n) for n in names]
    source = get_provider(provider, **provider_kwargs)
    if isinstance(source, FileProvider):
        return source.vocabulary_for(names)
    if descriptions is None and describe:
        descriptions = source.describe(names)
        if descriptions is None:
            raise ValueError(f"provider {source.name!r} cannot write class descriptions")
    if templates:
        if descriptions is not None:
            raise ValueError("templates are for names; descriptions have their own description_template")
        stacked = np.stack([source.embed(class_prompts(names, None, t)) for t in templates])  # (T,K,E)
        embeddings = l2_normalize(stacked.mean(0))
    else:
        embeddings = source.embed(class_prompts(names, descriptions, template, description_template))
    return Vocabulary(names=names, embeddings=embeddings,
                      descriptions=None if descriptions is None else list(descriptions),
                      provider=source.name, palette=palette)
