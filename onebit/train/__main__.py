"""`python -m onebit.train ...` is `onebit train ...` (torchrun launches it this way too)."""

from onebit.train.trainer import main

main()
