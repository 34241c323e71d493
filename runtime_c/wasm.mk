# WebAssembly (wasm32-wasi) build of the runtime, included by the Makefile.
#   make -C runtime_c wasm    # build/wasm/onebit.wasm + onebit.mjs (JS API), build/wasm/onebit-run
#                             # (a Node launcher of the WASI onebit-run.wasm; same arguments)
# Needs Debian's clang, lld, llvm (llvm-ar), wasi-libc and Node >= 20 to run.  No threads
# (OB_NO_THREADS) and mmap emulated by wasi-libc (reads the file into memory).
WASM_CC ?= clang
WASM_AR ?= llvm-ar
WASM_BUILD ?= build/wasm
WASM_SIMD ?= -msimd128
WASM_CFLAGS := --target=wasm32-wasi -std=c99 -O2 -Wall -Wextra -Werror $(WASM_SIMD) \
  -DOB_NO_THREADS -D_WASI_EMULATED_MMAN -Iinclude -Isrc -Wno-error=unused-parameter
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
	$(WASM_CC) $(WASM_LIB_LDFLAGS) -o $@ $^ -lwasi-emulated-mman -lm

$(WASM_BUILD)/onebit-run.wasm: $(WASM_BUILD)/obj/main.o $(WASM_BUILD)/libonebit.a
	$(WASM_CC) --target=wasm32-wasi -Wl,--strip-all -o $@ $^ -lwasi-emulated-mman -lm

$(WASM_BUILD)/onebit.mjs: wasm/onebit.mjs
	cp $< $@

$(WASM_BUILD)/onebit-run.cjs: wasm/onebit-run.cjs
	cp $< $@

# A shell wrapper: .cjs keeps Node from reading the launcher as an ES module.
$(WASM_BUILD)/onebit-run: $(WASM_BUILD)/onebit-run.cjs $(WASM_BUILD)/onebit-run.wasm
	printf '#!/bin/sh\nexec node --no-warnings "$$(dirname "$$0")/onebit-run.cjs" "$$@"\n' > $@
	chmod +x $@

-include $(wildcard $(WASM_BUILD)/obj/*.d)
