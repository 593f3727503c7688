"""Shamir's secret sharing over GF(p), p = 2**521 - 1 (a Mersenne prime above any 32-byte secret).

A secret is the constant term of a random polynomial of degree ``threshold - 1``;
share ``x`` is the polynomial at x (x = 1, 2, ...). Any ``threshold`` shares give the
secret back by Lagrange interpolation at 0; fewer say nothing about it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence

PRIME = 2**521 - 1


def split(secret: int, xs: Sequence[int], threshold: int) -> dict[int, int]:
    """Shares of ``secret`` (0 <= secret < PRIME) at the points ``xs`` (distinct, 1 <= x < PRIME)."""
    if not 0 <= secret < PRIME:
        raise ValueError("the secret must lie in the field")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} needs between 1 and {len(xs)} shares")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and non-zero")
    coefficients = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x) for x in xs}


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    value = 0
    for c in reversed(coefficients):  # Horner
        value = (value * x + c) % PRIME
    return value


def combine(shares: Iterable[tuple[int, int]]) -> int:
    """The secret from (x, y) shares (at least the threshold's worth; extra ones are harmless if genuine)."""
    points = list(shares)
    if len({x for x, _ in points}) != len(points):
        raise ValueError("two shares for one point")
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * -xj % PRIME
                den = den * (xi - xj) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    return secret


def to_bytes(value: int) -> bytes:
    """A 32-byte secret back from the field."""
    return value.to_bytes(32, "big")


def from_bytes(secret: bytes) -> int:
    if len(secret) != 32:
        raise ValueError("secrets are 32 bytes")
    return int.from_bytes(secret, "big")
