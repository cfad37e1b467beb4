"""No Docker engine here: parse the compose file and check its commands are real."""

import shlex
from pathlib import Path

import click
import pytest
import yaml

from digitscan.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def digitscan_commands(command) -> list[list[str]]:
    if command[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in command[2].split("&&")
                if shlex.split(part)[0] == "digitscan"]
    return [command] if command[0] == "digitscan" else []


def parse(argv: list[str]) -> str:
    """Parse a digitscan command line with the real CLI, without running it."""
    ctx = main.make_context("digitscan", argv[1:], resilient_parsing=False)
    name, cmd, rest = main.resolve_command(ctx, argv[1:])
    cmd.make_context(name, rest, parent=ctx)
    return name


def test_services_and_profiles(compose):
    services = compose["services"]
    assert {"redis", "worker", "flower", "train"} <= set(services)
    assert services["train"]["profiles"] == ["train"]
    assert "--appendonly" in services["redis"]["command"]
    # A host Redis usually holds 6379: the compose one is published elsewhere.
    assert services["redis"]["ports"] == ["127.0.0.1:16379:6379"]
    train = services["train"]["command"][2]
    assert "cp /runs/model/metrics.json /models/" in train and "/models/plots/" in train
    assert "chown -R --reference=/models" in train and "--quantize" not in train
    command = services["redis"]["command"]
    assert command[command.index("--maxmemory") + 1] == "1gb"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert "noeviction" in services["redis"]["command"]
    assert "./models:/models:ro" in services["worker"]["volumes"]
    assert services["worker"]["build"]["target"] == "worker"
    assert services["worker"]["environment"]["DIGITSCAN_BROKER_URL"].startswith("redis://redis:")


def test_prometheus_scrapes_every_worker_on_its_metrics_port(compose):
    services = compose["services"]
    port = int(services["worker"]["environment"]["DIGITSCAN_METRICS_PORT"])
    mount = "./docker/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert mount in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    config = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    # the worker service's name: every replica of --scale worker=N, on the port it serves
    assert discovery == {"names": ["worker"], "type": "A", "port": port}
    from digitscan.worker.settings import Settings

    assert Settings.from_env(services["worker"]["environment"]).metrics_port == port


def test_every_digitscan_command_parses_with_the_real_cli(compose):
    commands = [c for s in compose["services"].values() for c in digitscan_commands(s["command"])]
    assert [parse(c) for c in commands] == ["worker", "data", "train", "export"]


def test_the_parser_catches_a_wrong_command():
    with pytest.raises(click.UsageError):
        parse(["digitscan", "worker", "--no-such-option"])


def test_worker_image_installs_only_the_worker_extra():
    dockerfile = (ROOT / "Dockerfile").read_text()
    worker_stage = dockerfile.split("AS worker")[1].split("FROM")[0]
    assert "ARG WORKER_EXTRAS=worker\n" in worker_stage and "torch" not in worker_stage
    assert '/wheels/digitscan-*.whl)[${WORKER_EXTRAS}]"' in worker_stage


def test_images_install_the_wheel_with_the_compiled_rule_search():
    """The images carry no compiler: the wheel is built in a stage that has one, and the
    worker image refuses to build if the compiled search did not make it in."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = dockerfile.split("AS base")[1].split("FROM")[0]
    assert "COPY pyproject.toml setup.py " in base  # setup.py declares the extension
    wheel_stage = dockerfile.split("AS wheel")[1].split("FROM")[0]
    assert "gcc" in wheel_stage and "pip wheel" in wheel_stage
    for stage in ("worker", "trainer"):
        body = dockerfile.split(f"AS {stage}")[1].split("FROM")[0]
        assert "COPY --from=wheel /wheels /wheels" in body and "gcc" not in body
    # -P: in /app, beside the copied sources, `python -c` would import their digitscan/.
    assert 'python -P -c "from digitscan.worker.imaging import COMPILED; assert COMPILED"' in \
        dockerfile.split("AS worker")[1].split("FROM")[0]
