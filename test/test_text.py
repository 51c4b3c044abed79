"""Vocabulary file format, the offline local model, the OpenAI provider against a local fake
server (127.0.0.1 only), and the casseg-vocab CLI."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from casseg_ros.perception.palette import palette_for_names
from casseg_ros.text import (
    EmbeddingProvider,
    EmbeddingProviderError,
    OpenAIProvider,
    Vocabulary,
    VocabularyError,
    build_vocabulary,
    get_provider,
)
from casseg_ros.text import providers as providers_module
from casseg_ros.text.vocabulary import l2_normalize
from casseg_ros.vocab_cli import load_class_names, main as cli_main

API_KEY = "sk-test-DO-NOT-LEAK-5f2c9a"


# ---------------------------------------------------------------------------- local model

@contextmanager
def _no_network():
    """Any socket connection to a non-loopback address fails the test."""
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and sock.family != socket.AF_UNIX:
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(sock, address)

    socket.socket.connect = guarded
    try:
        yield
    finally:
        socket.socket.connect = real_connect


@pytest.fixture(scope="module")
def local_embeddings():
    """Loads the bundled model once for this module, offline and with network connects trapped."""
    names = ["car", "truck", "sky", "road"]
    with pytest.MonkeyPatch.context() as mp, _no_network():
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        provider = get_provider("local")
        emb = provider.embed([f"a photo of a {n}." for n in names])
        vocab = build_vocabulary(names, provider)
    return dict(zip(names, emb)), vocab


@pytest.mark.slow
def test_local_provider_gives_semantic_embeddings(local_embeddings):
    emb, _ = local_embeddings
    mat = np.stack(list(emb.values()))
    assert mat.shape == (4, 384) and mat.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(mat, axis=1), 1.0, atol=1e-5)
    assert float(emb["car"] @ emb["truck"]) > float(emb["car"] @ emb["sky"]) + 0.05
    assert float(emb["car"] @ emb["sky"]) < 0.9  # not a degenerate constant embedding


def test_build_vocabulary_local_uses_the_template(local_embeddings):
    emb, vocab = local_embeddings
    assert vocab.names == ["car", "truck", "sky", "road"] and vocab.provider == "local"
    assert vocab.descriptions is None
    np.testing.assert_allclose(vocab.embeddings[0], emb["car"], atol=1e-5)
    np.testing.assert_array_equal(vocab.palette, palette_for_names(["car", "truck", "sky", "road"]))


class _RecordingProvider(EmbeddingProvider):
    """Deterministic pseudo-embeddings per text; remembers what it was asked to embed."""

    name = "recording"

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts):
        self.texts += list(texts)
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(16) for t in texts]
        return l2_normalize(np.stack(rows))


def test_build_vocabulary_averages_the_prompt_templates():
    provider = _RecordingProvider()
    templates = ["a photo of a {name}.", "{name}", "an image of {name}."]
    vocab = build_vocabulary(["road", "car"], provider, templates=templates)
    assert provider.texts == ["a photo of a road.", "a photo of a car.", "road", "car", "an image of road.",
                              "an image of car."]
    asked = list(provider.texts)
    single = {t: provider.embed([t])[0] for t in asked}
    expected = l2_normalize(np.stack([np.mean([single[t.format(name=n)] for t in templates], 0) for n in ("road", "car")]))
    np.testing.assert_allclose(vocab.embeddings, expected, atol=1e-6)
    assert not np.allclose(vocab.embeddings[0], single["a photo of a road."])  # not just the first template
    with pytest.raises(ValueError, match="templates are for names"):
        build_vocabulary(["road"], provider, descriptions=["grey"], templates=templates)


# ------------------------------------------------------------------------- vocabulary file

def make_vocab(names=("road", "car", "sky"), dim=8, seed=0, descriptions=None) -> Vocabulary:
    rng = np.random.default_rng(seed)
    return Vocabulary(names=list(names), embeddings=rng.standard_normal((len(names), dim)),
                      descriptions=descriptions, provider="test")


def test_vocabulary_roundtrip_and_dict(tmp_path):
    vocab = make_vocab(descriptions=["flat grey", "a vehicle", "blue above"])
    vocab.palette[1] = (1, 2, 3)
    np.testing.assert_allclose(np.linalg.norm(vocab.embeddings, axis=1), 1.0, atol=1e-6)
    path = vocab.save(tmp_path / "sub" / "vocab.safetensors")
    loaded = Vocabulary.load(path)
    assert len(loaded) == 3 and loaded.names == vocab.names
    assert loaded.descriptions == vocab.descriptions and loaded.provider == "test"
    np.testing.assert_array_equal(loaded.embeddings, vocab.embeddings)
    np.testing.assert_array_equal(loaded.palette, vocab.palette)
    assert loaded.embeddings.dtype == np.float32 and loaded.palette.dtype == np.uint8
    meta = json.loads(json.dumps(vocab.to_dict()))
    again = Vocabulary.from_dict(meta, vocab.embeddings)
    assert again.names == vocab.names and again.palette.tolist() == vocab.palette.tolist()


def test_vocabulary_bytes_codec():
    vocab = make_vocab(descriptions=["flat grey", "a vehicle", "blue above"])
    again = Vocabulary.from_bytes(vocab.to_bytes())
    assert again.to_dict() == vocab.to_dict()
    np.testing.assert_array_equal(again.embeddings, vocab.embeddings)
    assert vocab.to_bytes() == again.to_bytes()  # deterministic bytes
    with pytest.raises(VocabularyError, match="onnx metadata"):
        Vocabulary.from_bytes(b"not safetensors", source="onnx metadata")


def test_vocabulary_validation(tmp_path):
    with pytest.raises(VocabularyError, match="duplicate"):
        make_vocab(names=("a", "b", "a"))
    with pytest.raises(VocabularyError, match="embeddings"):
        Vocabulary(names=["a", "b"], embeddings=np.ones((3, 4)))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(VocabularyError, match="bad.safetensors"):
        Vocabulary.load(bad)
    with pytest.raises(VocabularyError, match="not found"):
        Vocabulary.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_vocabulary_save_is_atomic(tmp_path, monkeypatch, failing):
    path = tmp_path / "vocab.safetensors"
    make_vocab(seed=1).save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(f"simulated {failing} failure")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="simulated"):
        make_vocab(names=("x", "y"), seed=2).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert Vocabulary.load(path).names == ["road", "car", "sky"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.safetensors"]


def test_file_provider_roundtrip_and_name_checks(tmp_path):
    vocab = make_vocab()
    path = vocab.save(tmp_path / "v.safetensors")
    same = build_vocabulary(["road", "car", "sky"], "file", path=path)
    np.testing.assert_array_equal(same.embeddings, vocab.embeddings)
    np.testing.assert_array_equal(get_provider("file", path=path).embed(["sky", "road"]),
                                  vocab.embeddings[[2, 0]])
    with pytest.raises(EmbeddingProviderError) as err:
        build_vocabulary(["road", "bus", "sky"], "file", path=path)
    assert "'bus'" in str(err.value) and "'car'" in str(err.value)
    with pytest.raises(EmbeddingProviderError, match="different order"):
        build_vocabulary(["car", "road", "sky"], "file", path=path)
    with pytest.raises(ValueError, match="unknown embedding provider"):
        get_provider("nope")


# --------------------------------------------------------------------- fake OpenAI server

def fake_embedding(text: str, dim: int = 16) -> list[float]:
    return np.random.default_rng(zlib.crc32(text.encode())).standard_normal(dim).tolist()


@dataclass
class FakeOpenAI:
    """Scripted OpenAI API: `script[path]` is a list of actions consumed one per request
    ('ok', 'sleep', or an HTTP status code); an empty list means 'ok'."""

    script: dict[str, list] = field(default_factory=dict)
    requests: list[tuple[str, dict, str]] = field(default_factory=list)
    sleep_s: float = 1.5
    retry_after_ms: int = 10  # sent with 429 and 5xx, as the OpenAI API does
    url: str = ""

    def next_action(self, path: str):
        queue = self.script.get(path, [])
        return queue.pop(0) if queue else "ok"

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.requests if p == path)


def _make_handler(state: FakeOpenAI):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            path = self.path.split("?")[0]
            state.requests.append((path, body, self.headers.get("Authorization", "")))
            action = state.next_action(path)
            if action == "sleep":
                time.sleep(state.sleep_s)
                return self._send(200, {})
            if isinstance(action, int):
                msg = {401: f"Incorrect API key provided: {API_KEY}.", 429: "Rate limit reached",
                       500: f"upstream failed for key {API_KEY}"}
                retry = action == 429 or action >= 500
                return self._send(action, {"error": {"message": msg.get(action, "server error"),
                                                     "type": "error", "param": None, "code": None}},
                                  {"retry-after-ms": str(state.retry_after_ms)} if retry else None)
            if path == "/v1/embeddings":
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                return self._send(200, {
                    "object": "list",
                    "data": [{"object": "embedding", "index": i, "embedding": fake_embedding(t)}
                             for i, t in enumerate(inputs)],
                    "model": body["model"],
                    "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
                })
            if path == "/v1/chat/completions":
                cls = body["messages"][-1]["content"].split(":", 1)[1].strip()
                return self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": 1700000000,
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                 "message": {"role": "assistant", "refusal": None,
                                             "content": f"  A typical {cls} seen from a car.\n"}}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
                })
            return self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    return Handler


@pytest.fixture
def fake_openai(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    state = FakeOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def provider_for(state: FakeOpenAI, **kwargs) -> OpenAIProvider:
    opts = dict(base_url=state.url, timeout=5.0, max_attempts=3)
    opts.update(kwargs)
    return OpenAIProvider(**opts)


@pytest.mark.slow
def test_openai_happy_path_with_descriptions(fake_openai):
    vocab = build_vocabulary(["car", "road"], provider_for(fake_openai), describe=True)
    assert vocab.provider == "openai"
    assert vocab.descriptions == ["A typical car seen from a car.", "A typical road seen from a car."]
    embedded = [body["input"] for path, body, _ in fake_openai.requests if path == "/v1/embeddings"]
    assert embedded == [["car: A typical car seen from a car.", "road: A typical road seen from a car."]]
    expected = np.array([fake_embedding(t) for t in embedded[0]], np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vocab.embeddings, expected, atol=1e-6)
    assert fake_openai.count("/v1/chat/completions") == 2
    chat = next(body for path, body, _ in fake_openai.requests if path == "/v1/chat/completions")
    assert chat["model"] == "gpt-4o-mini"
    assert all(auth == f"Bearer {API_KEY}" for _, _, auth in fake_openai.requests)


@pytest.mark.slow
def test_openai_retries_429_then_succeeds(fake_openai):
    """The openai client's retry policy: it retries 429 and 5xx and waits what the server asks."""
    fake_openai.script["/v1/embeddings"] = [429, 503]
    fake_openai.retry_after_ms = 300
    provider = provider_for(fake_openai, embedding_model="emb-x")
    t0 = time.monotonic()
    emb = provider.embed(["a photo of a car."])
    assert time.monotonic() - t0 >= 0.6  # two waits of the server's retry-after-ms
    assert emb.shape == (1, 16)
    assert fake_openai.count("/v1/embeddings") == 3 and provider.requests_made == 3
    assert fake_openai.requests[-1][1]["model"] == "emb-x"


def test_openai_401_fails_at_once_without_leaking_the_key(fake_openai):
    fake_openai.script["/v1/embeddings"] = [401, 401, 401]
    provider = provider_for(fake_openai)
    with pytest.raises(EmbeddingProviderError) as err:
        provider.embed(["car"])
    assert fake_openai.count("/v1/embeddings") == 1
    assert err.value.status_code == 401 and "401" in str(err.value) and "OPENAI_API_KEY" in str(err.value)
    assert API_KEY not in str(err.value) and API_KEY not in repr(provider)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_openai_persistent_5xx_gives_up(fake_openai):
    fake_openai.script["/v1/embeddings"] = [500, 502, 500, 500]
    with pytest.raises(EmbeddingProviderError) as err:
        provider_for(fake_openai).embed(["car"])
    assert fake_openai.count("/v1/embeddings") == 3
    assert "after 3 attempts" in str(err.value) and "HTTP 500" in str(err.value)
    assert API_KEY not in str(err.value)


@pytest.mark.slow
def test_openai_timeout_is_retried_then_reported(fake_openai):
    fake_openai.script["/v1/embeddings"] = ["sleep", "sleep"]
    fake_openai.sleep_s = 1.0
    provider = provider_for(fake_openai, timeout=0.25, max_attempts=2)
    t0 = time.monotonic()
    with pytest.raises(EmbeddingProviderError) as err:
        provider.embed(["car"])
    assert time.monotonic() - t0 < 5.0
    assert fake_openai.count("/v1/embeddings") == 2
    assert "timed out" in str(err.value) and "after 2 attempts" in str(err.value)
    assert err.value.status_code is None and API_KEY not in str(err.value)


def test_openai_connection_refused_is_reported(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAIProvider(base_url=f"http://127.0.0.1:{port}/v1", timeout=2.0, max_attempts=2)
    with pytest.raises(EmbeddingProviderError, match="connection error") as err:
        provider.embed(["car"])
    assert err.value.attempts == 2 and API_KEY not in str(err.value)


def test_openai_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EmbeddingProviderError, match="OPENAI_API_KEY"):
        OpenAIProvider(base_url="http://127.0.0.1:9/v1").embed(["car"])


# ------------------------------------------------------------------------------------- CLI

def test_cli_name_sources(tmp_path):
    assert load_class_names("road, car ,sky") == (["road", "car", "sky"], None, {})
    f = tmp_path / "classes.yaml"
    f.write_text("classes:\n  - {name: road, description: flat asphalt}\n  - {name: car, description: a vehicle}\n")
    assert load_class_names(str(f)) == (["road", "car"], ["flat asphalt", "a vehicle"], {})
    f.write_text("0: road\n2: sky\n1: car\n")
    assert load_class_names(str(f)) == (["road", "car", "sky"], None, {})
    f.write_text("- {name: road, color: '#102030'}\n- {name: car, color: [1, 2, 3]}\n- {name: sky}\n")
    assert load_class_names(str(f)) == (["road", "car", "sky"], None, {"road": (16, 32, 48), "car": (1, 2, 3)})
    f.write_text("- {name: road, color: purple}\n")
    with pytest.raises(ValueError, match="'road'.*#rrggbb"):
        load_class_names(str(f))
    with pytest.raises(ValueError, match="not found"):
        load_class_names(str(tmp_path / "none.yaml"))


def test_cli_openai_and_file_providers(fake_openai, tmp_path, capsys):
    out = tmp_path / "vocab.safetensors"
    rc = cli_main(["--names", "car,road", "--provider", "openai", "--base-url", fake_openai.url,
                   "--describe", "--out", str(out), "--max-attempts", "1"])
    assert rc == 0, capsys.readouterr().err
    vocab = Vocabulary.load(out)
    assert vocab.names == ["car", "road"] and vocab.descriptions and vocab.provider == "openai"
    copy = tmp_path / "copy.safetensors"
    assert cli_main(["--names", "car,road", "--provider", "file", "--from-file", str(out),
                     "--out", str(copy)]) == 0
    assert cli_main(["--names", "car,bus", "--provider", "file", "--from-file", str(out),
                     "--out", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "'bus'" in err and API_KEY not in err
    fake_openai.script["/v1/embeddings"] = [401]
    assert cli_main(["--names", "car", "--provider", "openai", "--base-url", fake_openai.url,
                     "--out", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "401" in err and API_KEY not in err and not (tmp_path / "x.safetensors").exists()


def test_cli_local_provider(local_embeddings, tmp_path, capsys):
    out = tmp_path / "local.safetensors"
    assert cli_main(["--names", "car,truck,sky,road", "--out", str(out)]) == 0
    vocab = Vocabulary.load(out)
    np.testing.assert_allclose(vocab.embeddings, local_embeddings[1].embeddings, atol=1e-5)
    np.testing.assert_array_equal(vocab.palette, palette_for_names(["car", "truck", "sky", "road"]))
    # a colour chosen for one class; the others keep their names' colours
    assert cli_main(["--names", "car,truck,sky,road", "--colors", "sky=#000080", "--out", str(out)]) == 0
    assert Vocabulary.load(out).palette.tolist() == [[0, 0, 142], [0, 0, 70], [0, 0, 128], [128, 64, 128]]
    assert cli_main(["--names", "car,sky", "--colors", "boat=1,2,3", "--out", str(out)]) == 1
    assert "not classes: ['boat']" in capsys.readouterr().err
    assert providers_module._load_sentence_transformer.cache_info().currsize == 1
