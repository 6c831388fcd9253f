"""Deterministic synthetic NASNet weights, bit-identical to `nasnet_search::init`.

Specification (docs/synthetic-weights.md):
  seed(key)   = FNV-1a 64 of the key's UTF-8 bytes
  u(key, i)   = (mix(seed + (i + 1) * 0x9E3779B97F4A7C15) >> 40) / 2**23 - 1, i = 0..n-1,
                with mix the SplitMix64 finalizer and all arithmetic modulo 2**64
  value       = 0.1 u              for *running_mean
                1 + 0.5 u          for *running_var
                u * sqrt(3/fan_in) for tensors of rank >= 2 (fan_in = prod(shape[1:]))
                1 + 0.25 u         for other *weight (batch-norm scale)
                0.1 u              otherwise (biases)
  computed in float64, then rounded to float32. Keys are the canonical names (cells numbered
  0..3N-1). The input batch is u("input", n*3*s*s) reshaped to [n, 3, s, s].
"""

import numpy as np

MASK = (1 << 64) - 1
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & MASK
    return h


def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(key: str, n: int) -> np.ndarray:
    seed = np.uint64(fnv1a64(key))
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = _mix(seed + i * GOLDEN)
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 23) - 1.0


def synthetic(name: str, shape) -> np.ndarray:
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape)) if shape else 1
    u = uniform(name, n)
    if name.endswith("running_mean"):
        v = 0.1 * u
    elif name.endswith("running_var"):
        v = 1.0 + 0.5 * u
    elif len(shape) >= 2:
        v = u * np.sqrt(3.0 / int(np.prod(shape[1:])))
    elif name.endswith("weight"):
        v = 1.0 + 0.25 * u
    else:
        v = 0.1 * u
    return v.astype(np.float32).reshape(shape)


def synthetic_input(n: int, size: int) -> np.ndarray:
    return uniform("input", n * 3 * size * size).astype(np.float32).reshape(n, 3, size, size)
