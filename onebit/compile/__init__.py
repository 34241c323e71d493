"""Stage 2, the compiler: a checkpoint becomes a `.1bit` file (docs/FORMAT.md), a C header or ONNX
graphs. Imports the core and the trainer's checkpoint reader; never the runtimes."""
