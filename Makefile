# Two commands on a fresh machine:  make bench  (the default CPU sweep + report)  and  make test  (the suite);
# make lab  opens the notebooks in JupyterLab;  make docs  builds the docs site into _docs/.
# All three create .venv and install what they need when it is missing or pyproject.toml changed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The torch wheel for this machine; the package itself only declares a range. Override on a GPU box,
# e.g. `make test TORCH_SPEC='torch==2.11.0'` or TORCH_SPEC= to keep the torch already installed.
TORCH_SPEC ?= torch==2.13.0
SWEEP ?= sweeps/default.yaml
OUT ?= results/default
export PATH := $(abspath $(BIN)):$(PATH)
export MPLBACKEND := Agg
# Nothing reaches the network at run time: a hub id loads from the local cache or fails with a clear error.
# `HF_HUB_OFFLINE=0 make bench SWEEP=...` lets a sweep of real hub ids download them.
export HF_HUB_OFFLINE ?= 1

.PHONY: bench test install lab sweep report check-clean check-export check-readme nbtest docs docs-deps pytest compat floor clean-runs infinity infinity-onnx serve-bench-onnx serve-bench-best serve-bench serve-bench-bf16 serve-bench-workers serve-bench-fp32-workers locust load-bench gpu-check gpu-wheels

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# JupyterLab on the notebooks (tools/lab): from the repo root with .venv's kernel, on 127.0.0.1 at a free port (or
# `make lab LAB_PORT=8888`), with a fresh token printed in the URL (or LAB_TOKEN=...), no browser, --allow-root as root.
LAB_PORT ?=
lab: $(STAMP)
	@LAB_PORT='$(LAB_PORT)' $(BIN)/python tools/lab

# The sweep exits 1 when some points failed (they are recorded): draw the report anyway, then report the failure.
bench: $(STAMP)
	@$(BIN)/gte-bench sweep $(SWEEP) --out $(OUT); rc=$$?; \
	if [ $$rc -le 1 ]; then $(BIN)/gte-bench report $(OUT) || exit $$?; fi; exit $$rc

# The docs build executes every notebook as nbdev-test does (tools/docs calls nbdev's own nbdev_test), so in the
# suite it is the notebook test run; the site it builds is what tests/test_site.py opens in a browser.
test: SITE = $(CURDIR)/_docs
test: $(STAMP) check-clean check-export check-readme docs pytest compat

check-clean: $(STAMP)
	@tools/check-unchanged $(BIN)/nbdev-clean
	@tools/check-unchanged $(BIN)/nbdev-clean --fname bench

check-export: $(STAMP)
	@tools/check-unchanged $(BIN)/nbdev-export

check-readme: $(STAMP)
	@tools/check-unchanged $(BIN)/gte-bench readme

nbtest: $(STAMP)
	IN_TEST=1 $(BIN)/nbdev-test --n-workers 2

# The docs site (tools/docs): notebooks executed, processed by nbdev, rendered by Quarto when `quarto` is on PATH,
# else by Sphinx + myst-nb + furo. Preview: python3 -m http.server -d _docs --bind 127.0.0.1
docs: $(STAMP)
	$(BIN)/python tools/docs

# What the site's browser test needs from Debian: the headless Chromium that playwright drives, and a CJK font.
DOCS_DEBS := chromium-headless-shell fonts-wqy-microhei fontconfig
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
docs-deps:
	@missing=$$(for p in $(DOCS_DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; fi

# GTE_BENCH_SITE: the site tests/test_site.py opens (under `make test`, the one `docs` built); empty, it builds its own.
SITE ?=
pytest: $(STAMP) docs-deps
	GTE_BENCH_SITE=$(SITE) $(BIN)/python -m pytest

# The declared floor of transformers (pyproject.toml), overlaid on the venv through PYTHONPATH with the tokenizers
# and huggingface-hub it was released with; the tests that reach transformers' API run again on it: checkpoint
# layouts and loading, each family's task and fidelity, the toggles and attention implementations, the frame's
# families under one toggle set. Not the data generators, the telemetry, the sweep machinery, the CLI's argument
# handling, the max-batch child or the LoadGen scenarios, which load and run models only the way those tests
# already do. test_compat checks the overlay took effect.
TF_FLOOR := 4.44.2
# the tokenizers and huggingface-hub released with it
TF_FLOOR_PINS := 'tokenizers>=0.19,<0.20' 'huggingface-hub>=0.23,<1.0'
COMPAT := $(VENV)/compat-transformers-$(TF_FLOOR)
$(COMPAT)/.installed: pyproject.toml
	rm -rf $(COMPAT)
	$(BIN)/python -m pip install -q --no-deps --target $(COMPAT) 'transformers==$(TF_FLOOR)' $(TF_FLOOR_PINS)
	@touch $@

compat: $(STAMP) $(COMPAT)/.installed
	PYTHONPATH=$(abspath $(COMPAT)) GTE_BENCH_EXPECT_TRANSFORMERS=$(TF_FLOOR) $(BIN)/python -m pytest -q \
	  tests/test_compat.py tests/test_checkpoint_layouts.py tests/test_tasks.py tests/test_ablation.py tests/test_frame.py

# The declared floor of torch and transformers together, in a venv of its own (.venv-floor): the whole pytest suite
# on torch 2.4 and transformers 4.44. PyPI has only CUDA builds of torch 2.4 for Linux (about 5 GB with the CUDA
# libraries it pulls; they load and run on the CPU without a GPU), so this is not part of `make test`: run it when
# a change touches model loading or the toggles. numpy 2 because pyarrow's wheels need it.
TORCH_FLOOR := 2.4.1
FLOOR := .venv-floor
$(FLOOR)/.installed: pyproject.toml
	@test -x $(FLOOR)/bin/python || $(PYTHON) -m venv $(FLOOR)
	$(FLOOR)/bin/python -m pip install -q 'torch==$(TORCH_FLOOR)' 'numpy>=2' -e '.[dev]' 'transformers==$(TF_FLOOR)' $(TF_FLOOR_PINS)
	@touch $@

floor: $(FLOOR)/.installed
	PATH=$(abspath $(FLOOR))/bin:$$PATH GTE_BENCH_EXPECT_TRANSFORMERS=$(TF_FLOOR) GTE_BENCH_EXPECT_TORCH=$(TORCH_FLOOR) \
	  $(FLOOR)/bin/python -m pytest -q -p no:cacheprovider

# infinity-emb, the serving peer of sweeps/serve-cpu.yaml, in a venv of its own (.venv-infinity) with the same torch wheel:
# `make serve-bench` runs that sweep and its report.
INFINITY := .venv-infinity
INFINITY_SPEC ?= infinity-emb[server,torch]==0.0.78

# infinity-emb with its optimum engine (ONNX Runtime), the peer of gte-bench serve with backend=onnxruntime, in a venv of
# its own (.venv-infinity-onnx), so that the torch engine's venv stays as the published runs had it; pinned as they ran.
INFINITY_ONNX := .venv-infinity-onnx
INFINITY_ONNX_SPEC ?= 'infinity-emb[server,torch,optimum]==0.0.78' 'optimum==2.1.0' 'optimum-onnx==0.1.0' 'onnxruntime==1.32.0'

# Both infinity venvs are built alike, each with the same torch wheel and its own requirements.
$(INFINITY)/.installed: PEER_SPEC = '$(INFINITY_SPEC)'
$(INFINITY_ONNX)/.installed: PEER_SPEC = $(INFINITY_ONNX_SPEC)
$(INFINITY)/.installed $(INFINITY_ONNX)/.installed:
	@test -x $(@D)/bin/python || $(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(@D)/bin/python -m pip install -q "$(TORCH_SPEC)"; fi
	$(@D)/bin/python -m pip install -q $(PEER_SPEC)
	@touch $@

infinity: $(INFINITY)/.installed
infinity-onnx: $(INFINITY_ONNX)/.installed

serve-bench: $(STAMP) $(INFINITY)/.installed
	$(MAKE) bench SWEEP=sweeps/serve-cpu.yaml OUT=results/serve-cpu

# The same comparison with both servers in bf16 (a CPU with AMX gains most), in two interleaved rounds.
serve-bench-bf16: $(STAMP) $(INFINITY)/.installed
	$(MAKE) bench SWEEP=sweeps/serve-cpu-bf16.yaml OUT=results/serve-cpu-bf16

# bf16 again, gte-bench serve with one inference thread and with two (--workers 2: two batches at once, a thread each).
serve-bench-workers: $(STAMP) $(INFINITY)/.installed
	$(MAKE) bench SWEEP=sweeps/serve-cpu-bf16-workers.yaml OUT=results/serve-cpu-bf16-workers

# The same in fp32, every server's default dtype, with fused attention (gte-bench serve's default, and infinity's).
serve-bench-fp32-workers: $(STAMP) $(INFINITY)/.installed
	$(MAKE) bench SWEEP=sweeps/serve-cpu-workers.yaml OUT=results/serve-cpu-workers

# In ONNX Runtime: gte-bench serve with backend=onnxruntime against infinity's optimum engine (and its torch engine).
serve-bench-onnx: $(STAMP) $(INFINITY)/.installed $(INFINITY_ONNX)/.installed
	$(MAKE) bench SWEEP=sweeps/serve-cpu-onnx.yaml OUT=results/serve-cpu-onnx

# Each server at its best on this CPU: gte-bench serve in bf16 with two workers, infinity on ONNX Runtime and in bf16.
serve-bench-best: $(STAMP) $(INFINITY)/.installed $(INFINITY_ONNX)/.installed
	$(MAKE) bench SWEEP=sweeps/serve-cpu-best.yaml OUT=results/serve-cpu-best

# locust in a venv of its own, for the load generator's side-by-side checks (`make load-bench`).
LOCUST := .venv-locust
LOCUST_SPEC ?= locust==2.47.0
$(LOCUST)/.installed:
	@test -x $(LOCUST)/bin/python || $(PYTHON) -m venv $(LOCUST)
	$(LOCUST)/bin/python -m pip install -q --upgrade pip
	$(LOCUST)/bin/python -m pip install -q '$(LOCUST_SPEC)'
	@touch $@

locust: $(LOCUST)/.installed

# The load generator against locust (ceiling and stall), then the SLO search of gte-bench serve.
load-bench: $(STAMP) $(LOCUST)/.installed
	$(MAKE) bench SWEEP=sweeps/load-generator.yaml OUT=results/load-generator
	$(MAKE) bench SWEEP=sweeps/service-load-cpu.yaml OUT=results/service-load-cpu
	$(MAKE) bench SWEEP=sweeps/service-load-rate-cpu.yaml OUT=results/service-load-rate-cpu

# The GPU check (gte_bench.gpucheck, `gte-bench gpu-check`): on a CUDA machine, with the python3 that holds its torch,
# from a copy of this tree and no network, in under eight minutes; everything lands in reports/<device>-gpu-check/.
# What that machine lacks installs from .gpu-wheels, which `make gpu-wheels` fills here beforehand (it travels with
# the tree). `make gpu-check GPU_CHECK_ARGS=--dry-run` walks it on a CPU.
GPU_PYTHON ?= python3
GPU_CHECK_ARGS ?=
gpu-check:
	@if [ -d .gpu-wheels ]; then $(GPU_PYTHON) -m pip install -q --no-index --find-links .gpu-wheels -r tools/gpu-requirements.txt; fi
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -c 'import sys; from gte_bench.cli import main; sys.exit(main())' gpu-check $(GPU_CHECK_ARGS)

gpu-wheels: $(STAMP)
	$(BIN)/python tools/gpu-wheels .gpu-wheels
