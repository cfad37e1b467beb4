"""The worker's classifier: pinned model, provider choice, real onnxruntime sessions."""

import json

import numpy as np
import pytest

from digitscan.errors import ModelError, ProviderError
from digitscan.worker.model import (
    ALLOW_SPINNING,
    Classifier,
    check_loadable,
    default_processes,
    default_threads,
    resolve_providers,
)


def test_auto_prefers_cuda_only_when_offered():
    assert resolve_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert resolve_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == \
        ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_explicit_cuda_never_falls_back_silently():
    with pytest.raises(ProviderError, match="provider cuda .* not offered .*--provider cpu"):
        resolve_providers("cuda", ["CPUExecutionProvider"])


def test_check_loadable_loads_in_a_child_and_names_what_is_wrong(model_copy, tmp_path):
    """The worker's start-up check: a real model passes; a file that is no model is refused
    with onnxruntime's own reason, found in a forked child."""
    check_loadable(model_copy)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model_copy.read_bytes()[:5000])
    with pytest.raises(ModelError) as err:
        check_loadable(truncated)
    message = str(err.value)
    assert message.startswith(f"onnxruntime cannot load {truncated} (")
    assert "\n" not in message and "Traceback" not in message and "digitscan export" in message


def test_check_loadable_never_waits_for_ever(model_copy, monkeypatch):
    """A load that hangs (a huge model, a machine out of memory) is refused after the bound,
    and its child killed. The hang is a stand-in: no real model loads slowly enough."""
    import time

    from digitscan.worker import model

    monkeypatch.setattr(model, "LOAD_CHECK_S", 0.2)
    monkeypatch.setattr(model.ort, "InferenceSession", lambda *a, **k: time.sleep(60))
    t0 = time.monotonic()
    with pytest.raises(ModelError, match=r"did not load .* within 0.2 s"):
        check_loadable(model_copy)
    assert time.monotonic() - t0 < 10


def test_classifier_runs_the_shipped_model(model_copy, mnist):
    clf = Classifier(model_copy, "cpu")
    probs = clf.predict(mnist.test_images[:50])
    assert probs.shape == (50, 11)  # ten digits and "not a digit"
    assert (probs.argmax(1) == mnist.test_labels[:50]).mean() >= 0.96
    assert clf.sha256 == json.loads(model_copy.with_suffix(".json").read_text())["sha256"]


def test_tampered_model_is_refused_naming_file_and_hashes(model_copy):
    data = bytearray(model_copy.read_bytes())
    data[-10] ^= 0xFF
    model_copy.write_bytes(bytes(data))
    with pytest.raises(ModelError) as err:
        Classifier(model_copy, "cpu")
    message = str(err.value)
    card = json.loads(model_copy.with_suffix(".json").read_text())
    assert str(model_copy) in message and card["sha256"] in message


def test_missing_card_or_model_is_a_clear_error(model_copy, tmp_path):
    model_copy.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="model card .* is missing"):
        Classifier(model_copy)
    with pytest.raises(ModelError, match="does not exist"):
        Classifier(tmp_path / "none.onnx")


def test_a_chunk_is_run_in_cache_sized_batches_with_the_same_answers(model_copy, mnist):
    """On the CPU a chunk goes through the model CPU_BATCH images at a time (its kernels are
    fastest there): the same probabilities, in the same order, as one run over the chunk."""
    from digitscan.contract import INPUT_NAME, PROBS
    from digitscan.worker.model import CPU_BATCH

    clf = Classifier(model_copy, "cpu")
    assert clf.batch == CPU_BATCH
    digits = mnist.test_images[: 2 * CPU_BATCH + 11]  # two full batches and a part
    whole = clf.session.run([PROBS], {INPUT_NAME: digits.reshape(-1, 1, 28, 28)})[0]
    np.testing.assert_allclose(clf.predict(digits), whole, atol=1e-6)
    one_by_one = np.concatenate([clf.predict(d[None]) for d in digits[-12:]])
    np.testing.assert_allclose(clf.predict(digits)[-12:], one_by_one, atol=1e-6)


def test_a_gpu_session_only_ever_sees_one_batch_shape(model_copy, mnist):
    """On a GPU every run is exactly GPU_BATCH images (the last padded with blanks), so
    cuDNN searches its algorithms once, at warm-up: the same answers as unpadded runs, for
    sizes below, at and above the batch. The CUDA provider is not here; the padding is the
    Classifier's own, shown on a CPU session set to a GPU's batching (of 8 images)."""
    from digitscan.contract import INPUT_NAME, PROBS
    from digitscan.worker.model import CPU_BATCH, GPU_BATCH, batching

    assert batching(["CUDAExecutionProvider", "CPUExecutionProvider"]) == (GPU_BATCH, True)
    assert batching(["CPUExecutionProvider"]) == (CPU_BATCH, False)
    clf = Classifier(model_copy, "cpu")
    clf.batch, clf.fixed = 8, True
    shapes = []
    real_run = clf.session.run

    def run(names, feed):
        shapes.append(feed[INPUT_NAME].shape[0])
        return real_run(names, feed)

    clf.session = type("Recorder", (), {"run": staticmethod(run)})()
    digits = mnist.test_images[:20]
    for n in (1, 7, 8, 9, 20):
        want = real_run([PROBS], {INPUT_NAME: digits[:n].reshape(-1, 1, 28, 28)})[0]
        got = clf.predict(digits[:n])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-6)
    clf.warm_up()
    assert set(shapes) == {8} and len(shapes) == 1 + 1 + 1 + 2 + 3 + 1


def test_warm_up_and_batch_of_one(model_copy):
    clf = Classifier(model_copy, "cpu")
    clf.warm_up()
    assert np.isclose(clf.predict(np.zeros((1, 28, 28), np.uint8)).sum(), 1, atol=1e-5)


@pytest.mark.parametrize(("processes", "cores", "threads"), [
    (1, 16, 16), (2, 16, 8), (3, 16, 5), (16, 16, 1), (32, 16, 1), (0, 4, 4),
])
def test_processes_times_threads_never_exceed_the_cores(processes, cores, threads):
    assert default_threads(processes, cores) == threads


@pytest.mark.parametrize(("providers", "cores", "processes"), [
    (["CPUExecutionProvider"], 2, 2), (["CPUExecutionProvider"], 64, 64),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], 2, 2),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], 16, 4),
])
def test_a_worker_takes_a_process_a_core_but_few_on_a_gpu(providers, cores, processes):
    assert default_processes(providers, cores) == processes


def test_a_sessions_threads_sleep_between_runs(model_copy, mnist):
    """Where a worker's process gets more than one onnxruntime thread (fewer processes than
    cores), the extra threads must not spin between runs: they would take cores from the
    other processes. The same answers as on one thread."""
    images = mnist.test_images[:64]
    one, two = Classifier(model_copy, "cpu", threads=1), Classifier(model_copy, "cpu", threads=2)
    options = two.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry(ALLOW_SPINNING) == "0"
    assert np.allclose(one.predict(images), two.predict(images), atol=1e-6)


def test_a_graph_without_the_contracts_outputs_is_refused(model_copy, tmp_path):
    """The worker asks for `probs` by name; a model whose card lacks it is not read by position."""
    card_path = model_copy.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["outputs"] = [{"name": "logits"}]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="expected input 'pixels' and an output 'probs'"):
        Classifier(model_copy, "cpu")


def test_the_cuda_provider_runs_without_tf32():
    # TF32 convolutions changed 1 answer in 10,000 against the CPU provider (H200, measured).
    from digitscan.devices import session_providers

    assert session_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == \
        [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    assert session_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
