"""Run-time vocabularies below the node: ``Backend.set_vocabulary`` on torch and onnxruntime (same
masks after a swap, any class count), refusals that leave the old vocabulary working, the same
result as a checkpoint baked with ``casseg-vocab bake``, and an int8 export that swaps too; the
node's hand-over (``ros.vocabulary_swap``, ROS-free): embedded on its own thread, swapped by the
worker between batches, answered only after the swap, the old vocabulary kept on any failure."""
from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from casseg_ros.export.parity import make_test_pattern
from casseg_ros.export.quantize import Int8Settings, quantize_onnx
from casseg_ros.model.checkpoint import CheckpointError, bake_vocabulary, read_checkpoint, read_vocabulary, save_checkpoint
from casseg_ros.perception.palette import palette_for_names
from casseg_ros.runtime import BackendUnavailable, create_backend
from casseg_ros.runtime.base import VocabularyUnsupported
from casseg_ros.runtime.model_export import META_KIND, META_VOCAB, export_checkpoint
from casseg_ros.runtime.onnx_export import export_onnx
from casseg_ros.ros.vocabulary_swap import VocabularySwap
from casseg_ros.text import Vocabulary, build_vocabulary
from casseg_ros.vocab_cli import main as vocab_main
from model_factory import SlowTestProvider, local_vocabulary, random_vocabulary, tiny_local_model, tiny_model
from ros_helpers.harness import wait_until

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
SIZE = (64, 128)
SWAPS = [("street", "automobile", "pedestrian"),  # other names, fewer classes
         ("road",),  # one class
         ("road", "car", "person", "sky", "building", "tree", "water", "boat", "bus", "truck", "bicycle")]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("swap") / "local.safetensors", tiny_local_model())


@pytest.fixture(scope="module")
def backends(ckpt, tmp_path_factory):
    cache = tmp_path_factory.mktemp("onnx_cache")
    return {name: create_backend(name, ckpt, input_size=SIZE, onnx_cache_dir=cache, num_threads=1)
            for name in ("torch", "onnxruntime")}


def _images(n: int = 2, size=SIZE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = make_test_pattern(*size).astype(int)
    return np.stack([np.clip(base + rng.integers(-25, 26, base.shape), 0, 255).astype(np.uint8) for _ in range(n)])


def _vocabulary_from_provider(backend, names):
    """What the node does: embed the names with the provider of the current vocabulary."""
    return build_vocabulary(list(names), backend.vocabulary.provider)


@pytest.mark.slow
@pytest.mark.parametrize("names", SWAPS, ids=lambda n: f"K{len(n)}")
def test_torch_and_onnxruntime_agree_after_a_swap(backends, names):
    images = _images(2, size=(90, 150))  # not input_size: the host resize path too
    for backend in backends.values():
        backend.set_vocabulary(_vocabulary_from_provider(backend, names))
    rt, ro = (backends[n].infer(images) for n in ("torch", "onnxruntime"))
    for backend in backends.values():
        assert backend.vocabulary.names == list(names)
    k = len(names)
    assert rt.class_scores.shape == ro.class_scores.shape == (2, k)
    assert rt.adjacency.shape == ro.adjacency.shape == (2, k, k)
    assert rt.class_ids.max() < k
    assert (rt.class_ids == ro.class_ids).mean() >= 0.999
    assert np.abs(rt.confidence - ro.confidence).max() <= 1e-3
    assert np.abs(rt.class_scores - ro.class_scores).max() <= 1e-3


def test_a_swap_equals_a_baked_checkpoint(ckpt, backends, tmp_path):
    names = ("street", "automobile", "pedestrian", "tree")
    vocabulary = _vocabulary_from_provider(backends["torch"], names)
    baked = bake_vocabulary(ckpt, vocabulary, tmp_path / "baked.safetensors")
    images = _images(1)
    swapped = create_backend("torch", ckpt, input_size=SIZE, num_threads=1)
    swapped.set_vocabulary(vocabulary)
    fresh = create_backend("torch", baked, input_size=SIZE, num_threads=1)
    a, b = swapped.infer(images), fresh.infer(images)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    np.testing.assert_array_equal(a.class_scores, b.class_scores)
    # and not what the original classes give: the swap changed the scoring
    original = create_backend("torch", ckpt, input_size=SIZE, num_threads=1).infer(images)
    assert original.class_scores.shape != a.class_scores.shape


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch", "onnxruntime"])
def test_refused_vocabularies_leave_the_old_one_working(ckpt, tmp_path, name):
    backend = create_backend(name, ckpt, input_size=SIZE, onnx_cache_dir=tmp_path, num_threads=1)
    images = _images(1)
    before = backend.infer(images)
    old = backend.vocabulary
    narrow = random_vocabulary(3, dim=64)  # another provider's width: the text projection takes 384
    with pytest.raises(VocabularyUnsupported, match="dimension 64.*384"):
        backend.set_vocabulary(narrow)
    with pytest.raises(VocabularyUnsupported, match="Vocabulary"):
        backend.set_vocabulary(["road", "car"])
    assert backend.vocabulary is old
    after = backend.infer(images)
    np.testing.assert_array_equal(before.class_ids, after.class_ids)
    np.testing.assert_array_equal(before.class_scores, after.class_scores)


@pytest.mark.slow
def test_an_export_without_the_class_input_runs_but_refuses_a_swap(tmp_path):
    """An .onnx made before run-time vocabularies: one input, classes baked in as constants."""
    model = tiny_local_model()
    legacy = export_onnx(model.export_module(), (torch.zeros((1, *SIZE, 3), dtype=torch.uint8),),
                         tmp_path / "legacy.onnx", ["images"], ["class_ids", "confidence", "class_scores", "adjacency"],
                         metadata={META_VOCAB: base64.b64encode(model.vocabulary.to_bytes()).decode(),
                                   META_KIND: "segmentation"})
    backend = create_backend("onnxruntime", legacy, input_size=SIZE, num_threads=1)
    before = backend.infer(_images(1))
    with pytest.raises(VocabularyUnsupported, match="exported before run-time vocabularies"):
        backend.set_vocabulary(local_vocabulary(("road", "car")))
    assert backend.vocabulary.names == model.vocabulary.names
    np.testing.assert_array_equal(before.class_ids, backend.infer(_images(1)).class_ids)


def test_a_provider_that_cannot_embed_is_a_clear_error(tmp_path):
    ckpt = save_checkpoint(tmp_path / "random.safetensors", tiny_model())  # provider "test"
    backend = create_backend("torch", ckpt, input_size=SIZE, num_threads=1)
    with pytest.raises(ValueError, match="unknown embedding provider 'test'.*cannot embed new class names"):
        _vocabulary_from_provider(backend, ("road",))
    with pytest.raises(ValueError, match="provider 'file' cannot be set up"):
        build_vocabulary(["road"], "file")  # no path= given


@pytest.mark.slow
def test_int8_export_swaps_too(ckpt, tmp_path):
    fp32, _ = export_checkpoint(ckpt, tmp_path / "m.onnx", SIZE)
    int8 = quantize_onnx(fp32, tmp_path / "m-int8.onnx", list(_images(2)), "pattern", Int8Settings(max_frames=2))
    try:
        backend = create_backend("onnxruntime", int8, input_size=SIZE, precision="int8", num_threads=1)
    except BackendUnavailable as exc:  # pragma: no cover - onnxruntime is a test dependency
        pytest.fail(str(exc))
    names = ("street", "automobile", "pedestrian")
    backend.set_vocabulary(local_vocabulary(names))
    res = backend.infer(_images(1))
    assert res.class_scores.shape == (1, 3) and res.class_ids.max() < 3
    np.testing.assert_allclose(res.class_scores.sum(1), 1.0, atol=1e-3)


# ------------------------------------------------------- the node's hand-over (ros.vocabulary_swap)

def _request(*names: str, descriptions=(), colors=()):
    return SimpleNamespace(class_names=list(names), descriptions=list(descriptions), colors=list(colors))


class _Recorder:
    """`apply` for VocabularySwap (the thread it ran on, what it got) and the answers."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.applied: list[tuple[str, list[str]]] = []
        self.answers = []
        self.fail = fail

    def apply(self, vocabulary: Vocabulary) -> None:
        if self.fail is not None:
            raise self.fail
        self.applied.append((threading.current_thread().name, list(vocabulary.names)))


def test_the_answer_comes_only_after_the_worker_swapped_between_batches():
    record, provider = _Recorder(), SlowTestProvider(delay_s=0.3)
    swap = VocabularySwap(record.apply)
    assert swap.open(provider) is None and provider.loads == 1  # loaded at configure
    swap.attach_worker()
    try:
        started = time.perf_counter()
        swap.submit(_request("road", "car"), record.answers.append)
        assert time.perf_counter() - started < 0.1  # returns at once: the embedding is elsewhere
        assert wait_until(lambda: swap.waiting, 10.0)
        assert provider.embed_threads and provider.embed_threads[0].startswith("casseg_vocabulary")
        assert provider.embed_nice == [19]  # below the worker and the executor
        time.sleep(0.2)
        assert record.answers == [] and record.applied == []  # embedded, not swapped: no answer yet
        worker = threading.Thread(target=swap.finish, name="worker")  # between two batches
        worker.start()
        worker.join()
        assert wait_until(lambda: record.answers, 5.0)
        assert record.applied == [("worker", ["road", "car"])]
        (answer,) = record.answers
        assert answer.vocabulary.names == ["road", "car"] and answer.vocabulary.provider == "slow_test"
        assert answer.message.startswith("2 classes (slow_test embeddings in 0.3"), answer.message
    finally:
        swap.detach_worker()
        swap.close()


def test_without_a_worker_the_embedding_thread_swaps_and_a_detached_worker_leaves_none_waiting():
    record = _Recorder()
    swap = VocabularySwap(record.apply)
    swap.open(SlowTestProvider())
    try:
        swap.submit(_request("road"), record.answers.append)  # not active: nothing runs batches
        assert wait_until(lambda: record.answers, 5.0)
        assert record.applied[0][0].startswith("casseg_vocabulary") and record.answers[0].vocabulary
        swap.attach_worker()
        swap.submit(_request("sky"), record.answers.append)
        assert wait_until(lambda: swap.waiting, 5.0)
        swap.detach_worker()  # the worker stopped with a swap waiting: done here, then answered
        assert wait_until(lambda: len(record.answers) == 2, 5.0)
        assert record.applied[1] == ("MainThread", ["sky"]) and record.answers[1].vocabulary.names == ["sky"]
    finally:
        swap.close()


def test_a_refused_swap_keeps_the_old_vocabulary_and_says_why():
    record = _Recorder(fail=VocabularyUnsupported("exported before run-time vocabularies"))
    swap = VocabularySwap(record.apply)
    swap.open(SlowTestProvider())
    swap.attach_worker()
    try:
        swap.submit(_request("road", "car"), record.answers.append)
        assert wait_until(lambda: swap.waiting, 5.0)
        swap.finish()
        assert wait_until(lambda: record.answers, 5.0)
        (answer,) = record.answers
        assert answer.vocabulary is None and record.applied == []
        assert answer.message == "vocabulary kept: VocabularyUnsupported: exported before run-time vocabularies"
    finally:
        swap.detach_worker()
        swap.close()


def test_requests_are_checked_first_and_a_provider_that_cannot_embed_is_the_answer():
    record = _Recorder()
    swap = VocabularySwap(record.apply)
    reason = swap.open("test")  # a checkpoint whose vocabulary a test made: it cannot embed
    assert reason.startswith("text provider 'test' failed: ValueError: unknown embedding provider 'test'")
    try:
        swap.submit(_request(), record.answers.append)
        swap.submit(_request("road", "road"), record.answers.append)
        swap.submit(_request("road"), record.answers.append)
        assert wait_until(lambda: len(record.answers) == 3, 5.0)
        assert [a.vocabulary for a in record.answers] == [None] * 3 and record.applied == []
        assert [a.message for a in record.answers] == [
            "vocabulary kept: class_names is empty", "vocabulary kept: duplicate class names: ['road']",
            f"vocabulary kept: {reason}"]
    finally:
        swap.close()


def test_a_worker_that_does_not_swap_in_time_is_the_answer_and_swaps_nothing_later():
    record = _Recorder()
    swap = VocabularySwap(record.apply, timeout_s=0.3)
    swap.open(SlowTestProvider())
    swap.attach_worker()
    try:
        swap.submit(_request("road"), record.answers.append)
        assert wait_until(lambda: record.answers, 5.0)
        assert record.answers[0].message == "vocabulary kept: the worker did not swap in time"
        swap.finish()
        assert record.applied == [] and not swap.waiting
    finally:
        swap.detach_worker()
        swap.close()


def test_requests_are_served_in_order_and_close_answers_the_queued_ones():
    record = _Recorder()
    swap = VocabularySwap(record.apply)
    swap.open(SlowTestProvider(delay_s=0.3))
    for name in ("road", "sky", "tree"):
        swap.submit(_request(name), record.answers.append)
    time.sleep(0.1)  # the first is being embedded
    swap.close()
    assert [a.vocabulary.names if a.vocabulary else a.message for a in record.answers] == [
        ["road"], "vocabulary kept: the node is cleaning up", "vocabulary kept: the node is cleaning up"]
    swap.submit(_request("road"), record.answers.append)  # closed: answered at once
    assert record.answers[-1].message == "vocabulary kept: not configured"


# ---------------------------------------------------------------------------------- bake CLI

def test_bake_cli_writes_a_copy_with_new_classes(ckpt, tmp_path, capsys):
    source_bytes = ckpt.read_bytes()
    out = tmp_path / "rcp.safetensors"
    rc = vocab_main(["bake", str(ckpt), "--names", "road,car,person", "--descriptions", "the drivable surface",
                     "a motor vehicle", "a human", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert ckpt.read_bytes() == source_bytes  # the source is never modified
    vocab = read_vocabulary(out)
    assert vocab.names == ["road", "car", "person"] and vocab.provider == "local"
    assert vocab.descriptions == ["the drivable surface", "a motor vehicle", "a human"]
    expected = build_vocabulary(["road", "car", "person"], "local",
                                ["the drivable surface", "a motor vehicle", "a human"])
    np.testing.assert_allclose(vocab.embeddings, expected.embeddings, atol=1e-6)
    source_state, _ = read_checkpoint(ckpt)
    baked_state, meta = read_checkpoint(out)
    assert set(baked_state) == set(source_state)
    for key in source_state:  # the weights are copied unchanged
        if key != "class_embeddings":
            assert torch.equal(source_state[key], baked_state[key]), key
    assert meta["extra"]["vocabulary_baked_from"]["classes"] == list(local_vocabulary().names)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temp file left


def test_bake_cli_errors(ckpt, tmp_path, capsys):
    assert vocab_main(["bake", str(ckpt), "--names", "road", "--out", str(ckpt)]) == 1
    assert "must not be the source" in capsys.readouterr().err
    random_ckpt = save_checkpoint(tmp_path / "random.safetensors", tiny_model())
    assert vocab_main(["bake", str(random_ckpt), "--names", "road", "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "provider 'test'" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()
    narrow = save_checkpoint(tmp_path / "narrow.safetensors", tiny_model(num_classes=3))
    with pytest.raises(CheckpointError, match="dimension 2"):
        bake_vocabulary(narrow, random_vocabulary(2, dim=2), tmp_path / "y.safetensors")
    assert vocab_main(["bake", str(ckpt), "--names", "road,car", "--descriptions", "only one",
                       "--out", str(tmp_path / "z.safetensors")]) == 1
    assert "1 descriptions for 2 names" in capsys.readouterr().err


def test_recolor_cli_changes_only_the_colours(tmp_path, capsys):
    # A checkpoint from before colours went by name: its stored palette is the old index rule.
    model = tiny_model(num_classes=3)
    old_palette = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70]], np.uint8)
    model.set_vocabulary(Vocabulary(["sky", "car", "forklift"], model.vocabulary.embeddings, provider="test",
                                    palette=old_palette))
    source = save_checkpoint(tmp_path / "old.safetensors", model)
    out = tmp_path / "new.safetensors"
    assert vocab_main(["recolor", str(source), "--out", str(out), "--colors", "car=0,0,200"]) == 0
    assert "new colours for 3 of 3 classes (sky, car, forklift)" in capsys.readouterr().out
    before, after = read_vocabulary(source), read_vocabulary(out)
    np.testing.assert_array_equal(before.palette, old_palette)  # the source is never modified
    assert after.names == before.names and after.provider == before.provider
    np.testing.assert_array_equal(after.embeddings, before.embeddings)
    assert after.palette.tolist() == [[70, 130, 180], [0, 0, 200],
                                      list(palette_for_names(["forklift"])[0])]
    source_state, _ = read_checkpoint(source)
    new_state, _ = read_checkpoint(out)
    assert all(torch.equal(source_state[k], new_state[k]) for k in source_state)
    assert vocab_main(["recolor", str(source), "--out", str(source)]) == 1
    assert "must not be the source" in capsys.readouterr().err


# ------------------------------------------------------------- language-side evaluation / training

def test_evaluation_settings_relabel_the_ground_truth():
    from training.datasets.context_scenes import CONTEXT_CLASSES
    from training.vocabulary_eval import Relabelled, settings

    by_name = {s.name: s for s in settings(CONTEXT_CLASSES)}
    label = np.arange(9, dtype=np.uint8).reshape(1, 9)
    image = np.zeros((1, 9, 3), np.uint8)
    relabel = {name: Relabelled([(image, label)], s)[0][1][0].tolist() for name, s in by_name.items()}
    assert relabel["trained"] == relabel["synonyms"] == relabel["untrained"] == list(range(9))
    # sky building vegetation road sidewalk water person car boat
    assert relabel["subset"] == [255, 255, 255, 0, 255, 255, 2, 1, 255]
    assert by_name["merged"].names[-1] == "vehicle" and relabel["merged"] == [0, 1, 2, 3, 4, 5, 6, 7, 7]
    assert by_name["untrained"].names == CONTEXT_CLASSES + ["bicycle"]
    assert len(set(by_name["synonyms"].names) | set(CONTEXT_CLASSES)) == 18  # every synonym is a new word


def test_paraphrase_training_never_sees_the_evaluation_synonyms(tmp_path):
    import yaml

    from training.train import ParaphraseSampler
    from training.vocabulary_eval import LEGACY_SYNONYMS, SYNONYMS

    def words(names):
        return {w for n in names for w in n.lower().replace(",", " ").split()}

    # the curated pool of names training: no evaluation name, nor a word of one (no "trees" for
    # "tree"), in either synonym set; the first pool was evaluated against the first set only
    for pool, evaluated in (("context_scenes_curated.yaml", (SYNONYMS, LEGACY_SYNONYMS)),
                            ("context_scenes.yaml", (LEGACY_SYNONYMS,))):
        table = yaml.safe_load((REPO / "training" / "paraphrases" / pool).read_text())
        assert set(table) == set(SYNONYMS), pool
        for synonyms in evaluated:
            assert not {p.lower() for ps in table.values() for p in ps} & {s.lower() for s in synonyms.values()}
        if pool.endswith("curated.yaml"):
            singular = {w.rstrip("s") for w in words(s for syn in evaluated for s in syn.values())}
            assert not {w.rstrip("s") for w in words(p for ps in table.values() for p in ps)} & singular, pool
            assert "pavement" not in words(p for ps in table.values() for p in ps)
    vocab = local_vocabulary(("road", "car"))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"road": ["roadway", "asphalt"], "car": ["sedan"]}))
    sampler = ParaphraseSampler(vocab, str(path), seed=0)
    assert sampler.names == [["road", "roadway", "asphalt"], ["car", "sedan"]]
    draws = [sampler.sample(step, torch.device("cpu")) for step in range(12)]
    assert all(d.shape == (2, 384) for d in draws)
    torch.testing.assert_close(draws[3], sampler.sample(3, torch.device("cpu")))  # per-step seed: resumable
    firsts = {tuple(d[0, :4].tolist()) for d in draws}
    assert len(firsts) == 3  # every name of 'road' drawn in 12 steps (p of missing one < 0.1)
    expected = local_vocabulary(("roadway",)).embeddings[0]
    assert any(np.allclose(d[0].numpy(), expected, atol=1e-6) for d in draws)
    # trained_name_share: the trained name that often, the rest uniform over the paraphrases
    shared = ParaphraseSampler(vocab, str(path), seed=0, trained_share=0.75)
    trained = torch.from_numpy(vocab.embeddings[0])
    picks = [shared.sample(step, torch.device("cpu"))[0] for step in range(400)]
    share = np.mean([torch.allclose(p, trained) for p in picks])
    assert 0.68 < share < 0.82, share  # binomial(400, 0.75): sd 0.022
    assert len({tuple(p[:4].tolist()) for p in picks}) == 3
    never = ParaphraseSampler(vocab, str(path), seed=0, trained_share=0.0)
    assert not any(torch.allclose(never.sample(step, torch.device("cpu"))[0], trained) for step in range(50))
    with pytest.raises(ValueError, match="trained_name_share"):
        ParaphraseSampler(vocab, str(path), seed=0, trained_share=1.5)
    path.write_text(yaml.safe_dump({"truck": ["lorry"]}))
    with pytest.raises(ValueError, match="truck"):
        ParaphraseSampler(vocab, str(path), seed=0)
