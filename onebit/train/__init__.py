"""Stage 1, training (PyTorch): the model, quantization-aware training, checkpoints, and
generation with the PyTorch model. Imports only the top-level core; nothing imports it but the
compiler (onebit/compile/), which reads checkpoints."""
