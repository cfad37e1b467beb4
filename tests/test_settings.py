from pathlib import Path

import pytest

from digitscan.errors import ConfigError
from digitscan.worker.celeryconfig import celery_config
from digitscan.worker.messages import CONTENT_TYPE, SERIALIZER
from digitscan.worker.settings import Settings, redact

MODELS = Path(__file__).parent.parent / "models"


def test_environment_overrides_defaults_and_arguments_override_both():
    env = {"DIGITSCAN_BROKER_URL": "redis://r:1/2", "DIGITSCAN_TASK_TIME_LIMIT": "60",
           "DIGITSCAN_QUEUE": "q1"}
    s = Settings.from_env(env, queue="q2")
    assert (s.broker_url, s.task_time_limit, s.queue) == ("redis://r:1/2", 60, "q2")
    assert s.results_url == "redis://r:1/2"
    assert Settings.from_env(s.to_env()) == s


def test_visibility_timeout_must_exceed_the_time_limit():
    with pytest.raises(ConfigError, match="visibility_timeout .*must be longer than task_time_limit"):
        Settings.from_env({"DIGITSCAN_VISIBILITY_TIMEOUT": "100", "DIGITSCAN_TASK_TIME_LIMIT": "300"})


def test_non_integer_variable_is_named():
    with pytest.raises(ConfigError, match="DIGITSCAN_MAX_PIXELS='lots' is not an integer"):
        Settings.from_env({"DIGITSCAN_MAX_PIXELS": "lots"})


def test_celery_config_is_safe_by_default():
    conf = celery_config(Settings())
    # Data-only formats: msgpack (sent) and JSON (the version before's chunks); never pickle.
    assert conf["accept_content"] == [CONTENT_TYPE, "json"]
    assert conf["task_serializer"] == SERIALIZER
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"]
    assert conf["result_expires"] > 0 and conf["broker_connection_retry_on_startup"]


def test_task_events_are_on_unless_turned_off():
    conf = celery_config(Settings())
    assert conf["worker_send_task_events"] and conf["task_send_sent_event"]  # Flower sees tasks
    off = celery_config(Settings.from_env({"DIGITSCAN_TASK_EVENTS": "0"}))
    assert not off["worker_send_task_events"] and not off["task_send_sent_event"]


def test_redact_hides_passwords():
    assert redact("redis://user:s3cret@host:6380/0") == "redis://user:***@host:6380/0"
    assert "s3cret" not in redact("rediss://:s3cret@host/0")
    assert redact("redis://host:6379/0") == "redis://host:6379/0"


def test_the_cpu_runs_the_int8_model_only_while_its_card_passes_the_gate(tmp_path, monkeypatch):
    import json
    import shutil

    from digitscan.worker.settings import default_model

    monkeypatch.setattr("digitscan.devices.int8_pays", lambda: True)  # e.g. a CPU with VNNI

    for name in ("digits.onnx", "digits.json", "digits.int8.onnx", "digits.int8.json"):
        shutil.copy(MODELS / name, tmp_path / name)
    assert default_model("cpu", tmp_path) == str(tmp_path / "digits.int8.onnx")
    assert default_model("cuda", tmp_path) == str(tmp_path / "digits.onnx")  # CUDA runs fp32
    assert Settings(provider="cpu").model.endswith("digits.int8.onnx")  # the package's own
    # A card that records a failed gate (accuracy 0.3 points down) keeps the CPU on fp32 ...
    card = json.loads((tmp_path / "digits.int8.json").read_text())
    card["parity"]["int8_accuracy"] = card["parity"]["fp32_accuracy"] - 0.003
    (tmp_path / "digits.int8.json").write_text(json.dumps(card))
    assert default_model("cpu", tmp_path) == str(tmp_path / "digits.onnx")
    # ... as does a missing int8 file's card.
    (tmp_path / "digits.int8.json").unlink()
    assert default_model("cpu", tmp_path) == str(tmp_path / "digits.onnx")


@pytest.mark.parametrize(("native", "variant"), [(True, "digits.int8.onnx"),
                                                 (None, "digits.int8.onnx"),
                                                 (False, "digits.onnx")])
def test_a_cpu_where_int8_does_not_pay_runs_fp32(monkeypatch, native, variant):
    """Where int8 is not measured faster (no VNNI, dot product or AVX2), fp32 (README);
    where the CPU's features are unknown, the card's gate decides as before. (This machine's
    own CPU cannot be swapped: the features are set here; the next test checks the real
    detection.)"""
    from digitscan.worker.settings import default_model

    monkeypatch.setattr("digitscan.devices.int8_pays", lambda: native)
    assert default_model("cpu", MODELS) == str(MODELS / variant)
    assert default_model("cuda", MODELS) == str(MODELS / "digits.onnx")


def test_native_int8_is_what_the_kernel_reports():
    import platform
    from pathlib import Path

    from digitscan.devices import int8_native, int8_pays

    cpuinfo = Path("/proc/cpuinfo")
    assert platform.system() == "Linux" and cpuinfo.is_file()  # this suite's machines
    flags = set(cpuinfo.read_text().split())
    assert int8_native() == bool({"avx512_vnni", "asimddp"} & flags)
    assert int8_pays() == bool({"avx512_vnni", "asimddp", "avx2"} & flags)
