"""onebit: train, compile and run 1-bit and ternary language models on the edge."""

__version__ = "0.1.0"
