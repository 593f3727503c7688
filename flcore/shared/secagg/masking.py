"""What a device masks and how: its update as integers modulo 2**32, and masks nobody else can compute.

- Quantisation: each value is clipped to [-r, r] and mapped, with stochastic
  rounding (unbiased), onto ``2**bits`` levels; the sum of up to
  ``2**(32 - bits)`` such integers cannot wrap modulo 2**32, so the function's
  sum decodes exactly to the sum of the quantised values.
- The mask generator: AES-256 in counter mode, keyed by a 32-byte seed, one
  stream per tensor (the tensor's position is the counter's start), so a mask is
  made and removed one tensor at a time: memory stays O(largest tensor).
- The neighbour graph: SecAgg+'s sparse graph, a ring of the members in a
  seeded random order where each is joined to its ``degree / 2`` nearest on
  either side (complete when the members are few).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

import numpy as np

try:  # see flcore/shared/secagg/channel.py
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
except ImportError:  # pragma: no cover
    Cipher = None

from flcore.shared.encodings import MASKED_EXTRA

MODULUS_BITS = 32
WEIGHT, UNCLIPPED = MASKED_EXTRA  # the device's weight in the average; 1 if its change fitted under C (DP)


def max_members(bits: int) -> int:
    """How many quantised vectors can be summed before the sum could wrap."""
    return 2 ** (MODULUS_BITS - bits)


def quantise(values: np.ndarray, clip_range: float, bits: int, rng: np.random.Generator) -> np.ndarray:
    """``values`` clipped to [-clip_range, clip_range], as unsigned integers below 2**bits (stochastic rounding)."""
    levels = 2**bits - 1
    scaled = (np.clip(values.astype(np.float64), -clip_range, clip_range) + clip_range) * (levels / (2 * clip_range))
    low = np.floor(scaled)
    return (low + (rng.random(scaled.shape) < scaled - low)).astype(np.uint32)


def dequantise(total: np.ndarray, count: int, clip_range: float, bits: int) -> np.ndarray:
    """The sum of ``count`` values from the sum of their quantisations (already unmasked, mod 2**32)."""
    levels = 2**bits - 1
    return total.astype(np.float64) * (2 * clip_range / levels) - count * clip_range


def step(clip_range: float, bits: int) -> float:
    """One quantisation level: how far a value may move through quantisation."""
    return 2 * clip_range / (2**bits - 1)


def stream(seed: bytes, index: int, size: int) -> np.ndarray:
    """``size`` pseudo-random uint32 values from ``seed``, for the tensor at position ``index``."""
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(index.to_bytes(8, "big") + bytes(8))).encryptor()
    return np.frombuffer(encryptor.update(bytes(4 * size)) + encryptor.finalize(), dtype="<u4")


def neighbours(members: Sequence[str], degree: int, seed: str) -> dict[str, list[str]]:
    """Each member's neighbours in the round's graph; the graph is the same for everyone who knows
    the members and the seed (the job, round and attempt)."""
    ring = sorted(members)
    random.Random(hashlib.sha256(seed.encode()).digest()).shuffle(ring)
    n = len(ring)
    if n - 1 <= degree:
        return {m: sorted(o for o in ring if o != m) for m in ring}
    half = degree // 2
    out: dict[str, set[str]] = {m: set() for m in ring}
    for i, m in enumerate(ring):
        for d in range(1, half + 1):
            out[m].update((ring[(i + d) % n], ring[(i - d) % n]))
    return {m: sorted(v) for m, v in out.items()}


def default_degree(members: int) -> int:
    """SecAgg+'s logarithmic degree: an even number near 2·log2(members), at least 4 (complete below)."""
    return max(4, 2 * math.ceil(math.log2(max(members, 2))))


def order(names: Sequence[str]) -> list[str]:
    """The tensors in the order both sides number their mask streams."""
    return sorted(names)


def mask_purpose(job_id: str, rnd: int, attempt: int) -> str:
    """What the pairwise seeds of one attempt are derived for (never reused across attempts)."""
    return f"secagg-mask|{job_id}|{rnd}|{attempt}"


def pair_sign(me: str, other: str) -> int:
    """The lower name adds the pair's mask, the higher subtracts it: in a sum of both they cancel."""
    return 1 if me < other else -1


def apply_masks(values: dict[str, np.ndarray], seeds: Sequence[tuple[bytes, int]]) -> None:
    """Add (sign +1) or subtract (-1) each seed's stream to the uint32 tensors in place, modulo 2**32."""
    for index, name in enumerate(order(list(values))):
        t = values[name].reshape(-1)
        for seed, sign in seeds:
            s = stream(seed, index, t.size)
            if sign > 0:
                np.add(t, s, out=t)
            else:
                np.subtract(t, s, out=t)
