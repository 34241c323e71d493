"""Stage 3, the runtimes in Python: the NumPy reference forward, the C runtime through cffi and
onnxruntime. They read only what the compiler wrote and import only the top-level core: never
torch, never the trainer (tests/test_layout.py checks it)."""
