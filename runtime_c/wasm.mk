# WebAssembly (wasm32-wasi) build of the runtime, included by the Makefile.
#   make -C runtime_c wasm    # build/wasm/onebit.wasm + onebit.mjs (JS API), build/wasm/onebit-run
#                             # (a Node launcher of the WASI onebit-run.wasm; same arguments)
#   make -C runtime_c test-wasm  # tests/test_*.c built for wasm32-wasi, run under Node
# Needs Debian's clang, lld, llvm (llvm-ar), wasi-libc and Node >= 20 to run.  No threads
# (OB_NO_THREADS) and mmap emulated by wasi-libc (reads the file into memory).
WASM_CC ?= clang
WASM_AR ?= llvm-ar
WASM_BUILD ?= build/wasm
WASM_SIMD ?= -msimd128
WASM_CFLAGS := --target=wasm32-wasi -std=c99 -O2 -Wall -Wextra -Werror $(WASM_SIMD) \
  -DOB_NO_THREADS -D_WASI_EMULATED_MMAN -D_WASI_EMULATED_PROCESS_CLOCKS -Iinclude -Isrc
WASM_LIBS := -lwasi-emulated-mman -lwasi-emulated-process-clocks -lm
WASM_OBJS := $(patsubst src/%.c,$(WASM_BUILD)/obj/%.o,$(LIB_SRCS))
# What onebit.mjs calls: wasm/api.c's exports (export_name attributes) and nothing else.
WASM_LIB_LDFLAGS := --target=wasm32-wasi -mexec-model=reactor -Wl,--strip-all -Wl,--gc-sections

.PHONY: wasm
wasm: $(WASM_BUILD)/onebit.wasm $(WASM_BUILD)/onebit.mjs $(WASM_BUILD)/onebit-run.wasm $(WASM_BUILD)/onebit-run

$(WASM_BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(WASM_CC) $(WASM_CFLAGS) -MMD -MP -c $< -o $@

$(WASM_BUILD)/obj/api.o: wasm/api.c include/onebit.h
	@mkdir -p $(dir $@)
	$(WASM_CC) $(WASM_CFLAGS) -c $< -o $@

$(WASM_BUILD)/libonebit.a: $(WASM_OBJS)
	rm -f $@
	$(WASM_AR) rcs $@ $^

$(WASM_BUILD)/onebit.wasm: $(WASM_BUILD)/obj/api.o $(WASM_BUILD)/libonebit.a
	$(WASM_CC) $(WASM_LIB_LDFLAGS) -o $@ $^ $(WASM_LIBS)

$(WASM_BUILD)/onebit-run.wasm: $(WASM_BUILD)/obj/main.o $(WASM_BUILD)/libonebit.a
	$(WASM_CC) --target=wasm32-wasi -Wl,--strip-all -o $@ $^ $(WASM_LIBS)

$(WASM_BUILD)/onebit.mjs: wasm/onebit.mjs
	cp $< $@

$(WASM_BUILD)/onebit-run.cjs: wasm/onebit-run.cjs
	cp $< $@

# A shell wrapper: .cjs keeps Node from reading the launcher as an ES module.
$(WASM_BUILD)/onebit-run: $(WASM_BUILD)/onebit-run.cjs $(WASM_BUILD)/onebit-run.wasm
	printf '#!/bin/sh\nexec node --no-warnings "$$(dirname "$$0")/onebit-run.cjs" "$$@"\n' > $@
	chmod +x $@

-include $(wildcard $(WASM_BUILD)/obj/*.d)

# The C tests (tests/test_*.c) built for wasm32-wasi and run under Node: the SIMD128 kernels
# against the scalar references, and the runtime end to end.
# Left out: test_threads (pthreads) and test_locale (WASI has no comma-decimal locale to switch
# to).  test_bpe runs its long texts at 256 KB here: Node 20 on the build VM aborts (SIGABRT, no
# message) once wasm code touches more than ~32 MB of linear memory, which the 1 MB merge scratch
# does; a 10-line C program that mallocs and fills 40 MB aborts the same way.
WASM_SKIP := tests/test_locale.c tests/test_threads.c
WASM_TESTS := $(patsubst tests/%.c,$(WASM_BUILD)/tests/%.wasm,$(filter-out $(WASM_SKIP),$(TEST_SRCS)))
$(WASM_BUILD)/tests/%.wasm: tests/%.c $(WASM_BUILD)/libonebit.a
	@mkdir -p $(dir $@)
	$(WASM_CC) $(WASM_CFLAGS) -o $@ $< $(WASM_BUILD)/libonebit.a $(WASM_LIBS)

.PHONY: test-wasm
test-wasm: $(WASM_TESTS) wasm
	@fail=0; for t in $(WASM_TESTS); do \
	  echo "== $$t"; \
	  if node --no-warnings wasm/run-test.cjs $$t; then echo "PASS $$t"; else echo "FAIL $$t"; fail=1; fi; \
	done; \
	if [ $$fail -ne 0 ]; then echo "some wasm tests FAILED"; exit 1; fi; echo "all wasm tests passed"
