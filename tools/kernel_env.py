#!/usr/bin/env python3
"""Print the environment that makes torch pick *other* CPU kernels than this machine's defaults.

    env $(python tools/kernel_env.py) python -m pytest notebooks     # what `make test-kernels` runs

Stored notebook outputs must not depend on the CPU. Running the notebooks again under a different kernel
selection catches an output that does (a raw float difference, a loss printed to too many digits) on the
machine where it was stored, before it fails on someone else's. Verified on torch 2.13.0 CPU wheels
(the portability notes in CONTRIBUTING.md):

* `ATEN_CPU_CAPABILITY` moves ATen's vectorised kernels (SDPA, softmax, elementwise ops) and, with them,
  float32 results; it can only go down from what the CPU has. AVX-512 machines are taken down to `avx2` (an
  emulation of the AVX2-only machines seen), AVX2 machines to `default` (no SIMD kernels).
* `OMP_NUM_THREADS` changes how reductions in matmul and SDPA are split: results move in the last bits.
  `make test` runs one thread per pytest worker, so this runs two.
* `ONEDNN_MAX_CPU_ISA` and `MKL_ENABLE_INSTRUCTIONS` are set to the same ISA for completeness (oneDNN and MKL
  kernels on Intel CPUs); on the AMD EPYC CPUs measured they changed no result.
* int8 (fbgemm) kernels choose their path from the CPU itself: no variable changes them, so int8 figures are
  never compared outputs.
"""
from __future__ import annotations


def kernel_env() -> dict[str, str]:
    import torch

    capability = torch.backends.cpu.get_cpu_capability()          # 'DEFAULT', 'AVX2', 'AVX512', 'ZVECTOR'...
    if capability.startswith("AVX512"):
        isa = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    else:
        isa = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
               "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    threads = "2"                                   # `make test` runs one thread per pytest worker
    return {**isa, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


if __name__ == "__main__":
    print(" ".join(f"{k}={v}" for k, v in kernel_env().items()))
