# One command per job; each sets itself up on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch pairing that installs from this machine's disk and imports together
# (PyPI's torchvision fails beside the CPU-only 2.13.0 wheel). Override on other machines.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DATA   ?= data
DEMO   ?= demo

# Typefaces for the printed-digit and not-a-digit cells the trainer renders and the tests
# hold out (trainer/cells.py): serif, sans, mono, condensed, handwriting-style, with their
# bold and italic faces. Debian's packages; installed once, as root (CI runs as root).
FONT_PACKAGES ?= $(shell grep -v '^\#' docker/fonts.txt)
FONTS_STAMP := /usr/share/fonts/.digitscan-fonts
# The real browser the HTML report's test opens it in (Debian's Chromium and its driver).
BROWSER_PACKAGES ?= chromium chromium-driver
BROWSER_STAMP := /usr/share/.digitscan-browser

.PHONY: venv fonts browser test lint demo model bench clean bytecode

venv: $(VENV)/.installed

fonts: $(FONTS_STAMP)

$(FONTS_STAMP): docker/fonts.txt
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends $(FONT_PACKAGES) > /dev/null
	touch $@

browser: $(BROWSER_STAMP)

$(BROWSER_STAMP):
	command -v chromium > /dev/null && command -v chromedriver > /dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends $(BROWSER_PACKAGES) > /dev/null)
	touch $@

# worker/_cleanup.c: the editable install builds it in place (a C compiler is needed here;
# users' installs fall back to the numpy reference without one).
$(VENV)/.installed: pyproject.toml setup.py worker/_cleanup.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS) -e '.[all,dev]'
	$(MAKE) --no-print-directory bytecode
	touch $@

# Bytecode of the sources, as pip writes it for an installed package (not for an editable
# one): with PYTHONDONTWRITEBYTECODE set, as here, every process would compile digitscan's
# modules again, 0.15-0.3 s of each scan's start-up on 2 cores. Python ignores a stale file.
bytecode:
	$(BIN)/python -m compileall -q digitscan worker trainer export > /dev/null

# Lint, then the whole suite: what CI runs.
test: venv fonts browser
	$(BIN)/ruff check .
	$(BIN)/digitscan -q data --root $(DATA)
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .

# The whole mission on the embedded default: data, a short CNN training, export with
# parity, 10,000 MNIST test images as PNG files, scanned by a private Redis + 2 workers.
demo: venv
	$(BIN)/digitscan data --root $(DATA) --png $(DEMO)/mnist-test-png
	$(BIN)/digitscan train --arch cnn --epochs 1 --data $(DATA) --out $(DEMO)/train
	$(BIN)/digitscan export $(DEMO)/train/checkpoint.pt --out $(DEMO)/digits.onnx --data $(DATA)
	$(BIN)/digitscan scan $(DEMO)/mnist-test-png --model $(DEMO)/digits.onnx --workers 2 \
		--labels folders --out $(DEMO)/results.jsonl
	@echo "results: $(DEMO)/results.jsonl  plots: $(DEMO)/train/*.png  model card: $(DEMO)/digits.json"

# Reproduce the shipped artefacts from scratch (the default recipe, seed 0): fp32 and int8 models, cards.
model: venv fonts
	$(BIN)/digitscan data --root $(DATA)
	$(BIN)/digitscan train --data $(DATA) --out runs/model --seed 0 --no-progress
	cp runs/model/checkpoint.pt models/digits.pt
	mkdir -p models/plots && cp runs/model/*.png models/plots/ && cp runs/model/metrics.json models/
	$(BIN)/digitscan export models/digits.pt --out models/digits.onnx --quantize int8 --data $(DATA)

bench: venv fonts bytecode
	$(BIN)/digitscan -q data --root $(DATA)
	$(BIN)/python -m bench.train_bench --data $(DATA)
	$(BIN)/python -m bench.export_bench --data $(DATA)
	$(BIN)/python -m bench.provider_bench --data $(DATA)
	$(BIN)/python -m bench.worker_bench --data $(DATA)
	$(BIN)/python -m bench.population_bench --data $(DATA)
	$(BIN)/python -m bench.stage_bench --data $(DATA)
	$(BIN)/python -m bench.ratio_bench --data $(DATA)
	$(BIN)/python -m bench.jobs_bench --data $(DATA)
	$(BIN)/python -m bench.gpu_sweep here --data $(DATA)

clean:
	rm -rf $(DEMO) runs build *.egg-info .pytest_cache .ruff_cache
