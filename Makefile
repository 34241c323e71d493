# onebit: `make demo` trains, exports and runs a tiny ternary model in C; `make test` runs every test.
# Both build their own virtualenv in .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
# The shared corpus beside a checkout, when there is one; otherwise the data code downloads it.
ONEBIT_DATA_DIR ?= $(wildcard $(abspath ../shared/data))
export ONEBIT_DATA_DIR

DEMO   := runs/demo
PROMPT ?= ROMEO:

.PHONY: all venv runtime demo test test-python test-c setup-system setup-web clean

all: venv runtime

venv: $(VENV)/.installed

# torch first and exactly pinned: left to the resolver it pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

runtime:
	$(MAKE) -C runtime_c

# train -> export -> generate in C (and the PyTorch reference beside it, for comparison).
# The trained model and its export are file targets: a second `make demo` only generates.
$(DEMO)/latest: | venv
	$(BIN)/onebit train --preset tiny --quant ternary --data tinyshakespeare --out $(DEMO)

# The embedding (and the tied head) in f32, not the f16 default: lossless, so the C runtime's greedy
# text below is PyTorch's token for token (with f16 the session-25 demo model flipped a near-tie at
# token 88 of 200: the f16 head's logits 0.002 apart where PyTorch's were 0.05). 17 KB more here.
$(DEMO)/model.1bit: $(DEMO)/latest | venv
	$(BIN)/onebit export $(DEMO) -o $@ --embed-dtype f32 --emit-c-header $(DEMO)/model.h

demo: venv runtime $(DEMO)/model.1bit
	@echo "--- PyTorch reference (greedy)" >&2
	$(BIN)/onebit sample $(DEMO) --prompt "$(PROMPT)" -n 200 --temperature 0
	@echo >&2; echo "--- C runtime (greedy; the f32 KV-cache, PyTorch's twin)" >&2
	runtime_c/build/onebit-run -m $(DEMO)/model.1bit -p "$(PROMPT)" -n 200 --temperature 0 --kv f32
	@echo >&2; echo "--- C runtime (sampled)" >&2
	runtime_c/build/onebit-run -m $(DEMO)/model.1bit -p "$(PROMPT)" -n 300 --temperature 0.8 --seed 1 --bench

setup-system:
	tools/setup_system.sh

# npm packages of the browser demo (onnxruntime-web, playwright-core), pinned by its lock file
setup-web:
	@if command -v npm >/dev/null; then examples/web/setup.sh; \
	else echo "setup-web: npm not found; the browser test will skip"; [ "$$CI" != true ]; fi

# A C-side test whose toolchain is missing says so and skips, except under CI=true (.ci/run), where
# setup-system has installed them and a missing one fails the run, as the Python tests' skips do.
test: setup-system setup-web venv test-c test-python

test-c:
	$(MAKE) -C runtime_c test
	$(MAKE) -C runtime_c test-asan
	@if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then \
	  $(MAKE) -C runtime_c test-arm; \
	else echo "test-c: no aarch64 cross compiler or qemu; NEON tests skipped"; [ "$$CI" != true ]; fi
	@if command -v arm-linux-gnueabihf-gcc >/dev/null && command -v qemu-arm >/dev/null; then \
	  $(MAKE) -C runtime_c test-arm32; \
	else echo "test-c: no armhf cross compiler or qemu-arm; 32-bit tests skipped"; [ "$$CI" != true ]; fi
	$(MAKE) -C runtime_c test-tsan
	@if command -v clang >/dev/null; then $(MAKE) -C runtime_c fuzz FUZZ_SECONDS=15; \
	else echo "test-c: no clang; the fuzz pass is skipped"; [ "$$CI" != true ]; fi
	@if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null; then \
	  $(MAKE) -C examples/mcu test; \
	else echo "test-c: no arm-none-eabi-gcc or qemu-system-arm; Cortex-M firmware test skipped"; [ "$$CI" != true ]; fi
	@if command -v clang >/dev/null && command -v wasm-ld >/dev/null && command -v llvm-ar >/dev/null \
	  && command -v node >/dev/null && [ -f /usr/lib/wasm32-wasi/libc.a ]; then \
	  $(MAKE) -C runtime_c test-wasm; \
	else echo "test-c: no clang, wasm-ld, llvm-ar, node or wasi-libc; WebAssembly tests skipped"; [ "$$CI" != true ]; fi

test-python: venv runtime
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info
	$(MAKE) -C runtime_c clean
