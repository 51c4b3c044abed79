"""Class vocabulary and language embeddings (ROS-free, computed once offline)."""
from casseg_ros.text.build import (
    DEFAULT_DESCRIPTION_TEMPLATE,
    DEFAULT_TEMPLATE,
    build_vocabulary,
    class_prompts,
)
from casseg_ros.text.providers import (
    PROVIDERS,
    EmbeddingProvider,
    EmbeddingProviderError,
    FileProvider,
    LocalProvider,
    OpenAIProvider,
    get_provider,
)
from casseg_ros.text.vocabulary import Vocabulary, VocabularyError

__all__ = [
    "DEFAULT_DESCRIPTION_TEMPLATE",
    "DEFAULT_TEMPLATE",
    "PROVIDERS",
    "EmbeddingProvider",
    "EmbeddingProviderError",
    "FileProvider",
    "LocalProvider",
    "OpenAIProvider",
    "Vocabulary",
    "VocabularyError",
    "build_vocabulary",
    "class_prompts",
    "get_provider",
]
