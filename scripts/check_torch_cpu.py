"""Fail the install if torch is a CUDA build: it is gigabytes larger and useless on CPU machines."""

import sys

import torch

if torch.version.cuda is not None:
    sys.exit(
        f"torch {torch.__version__} is a CUDA build; ragcycle pins the CPU wheel (torch==2.13.0)"
    )
print(f"torch {torch.__version__}: CPU build")
