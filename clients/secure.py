"""A device's side of secure aggregation (SecAgg+; the stages are described in flcore/engine/secure.py).

The device keeps what it trained for a round until the round closes, and for
each attempt its two key pairs, its self-mask seed and the shares its neighbours
sent it. Only public keys, sealed shares, one masked vector and, at the end,
one kind of share per neighbour ever leave it; it never reveals both kinds for
one neighbour, whatever the function asks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from clients import transfer
from flcore.shared import weights as wcodec
from flcore.shared.secagg import channel, masking, shamir

log = logging.getLogger("clients")

Call = Callable[[str, dict], dict]


@dataclass
class Trained:
    """What a device trained in a round, kept until the round's sum is made (or it restarts)."""

    job_id: str
    round: int
    weights: dict[str, np.ndarray]
    examples: int
    metrics: dict
    unclipped: bool  # DP: whether its change fitted under the clipping norm
    noise: dict  # DP with secure aggregation: dp_noise_stddev, dp_count_stddev


@dataclass
class Attempt:
    """One attempt's secrets and what the neighbours sent."""

    key: tuple[str, int, int]
    c: object = field(default_factory=channel.new_key)  # to seal shares between neighbours
    s: object = field(default_factory=channel.new_key)  # to agree pairwise mask seeds
    seed: bytes = field(default_factory=lambda: os.urandom(32))  # the self mask's seed
    neighbours: dict = field(default_factory=dict)  # name -> {"c", "s", "point"}
    received: dict = field(default_factory=dict)  # name -> (seed share, key share) it holds for them


def _context(job_id: str, rnd: int, attempt: int, sender: str, receiver: str) -> str:
    return f"{job_id}|{rnd}|{attempt}|{sender}|{receiver}"


class SecureClient:
    """Runs the stages for one device identity (``me``), calling the function through ``call``."""

    def __init__(self, call: Call, me: Callable[[], str]):
        self.call = call
        self.me = me
        self.trained: Trained | None = None
        self.attempt: Attempt | None = None

    def holds(self, job_id: str, rnd: int) -> bool:
        """Whether this round's update is trained already (a retried attempt needs no new training)."""
        return self.trained is not None and (self.trained.job_id, self.trained.round) == (job_id, rnd)

    def keep(self, trained: Trained) -> None:
        self.trained = trained

    def advertise(self, job_id: str, rnd: int, attempt: int) -> float:
        """The keys stage: fresh key pairs and seed for this attempt, their public halves sent."""
        self.attempt = Attempt((job_id, rnd, attempt))
        body = {
            "round": rnd,
            "attempt": attempt,
            "stage": "keys",
            "c": channel.public(self.attempt.c),
            "s": channel.public(self.attempt.s),
            "commit": hashlib.sha256(self.attempt.seed).hexdigest(),
        }
        return float(self.call("secure", body).get("retry_after") or 0.5)

    def step(self, job_id: str, st: dict) -> float:
        """Take the stage the function asks for; seconds until the next poll."""
        key = (job_id, st["round"], st["attempt"])
        if self.attempt is None or self.attempt.key != key or not self.holds(job_id, st["round"]):
            # restarted, or the keys stage went on without us: this attempt cannot use this device
            log.info("secure round %s attempt %s: no keys of this device for it; waiting", st["round"], st["attempt"])
            return 1.0
        body = {"shares": self._shares, "masked": self._masked, "unmask": self._unmask}[st["stage"]](job_id, st)
        if st["stage"] == "masked":
            return float(body.get("retry_after") or 0.5)
        return float(self.call("secure", body).get("retry_after") or 0.5)

    def _shares(self, job_id: str, st: dict) -> dict:
        att, me = self.attempt, self.me()
        att.neighbours = st["neighbours"]
        points = [int(info["point"]) for info in att.neighbours.values()]
        seed_shares = shamir.split(shamir.from_bytes(att.seed), points, int(st["threshold"]))
        key_shares = shamir.split(shamir.from_bytes(channel.private_bytes(att.s)), points, int(st["threshold"]))
        purpose = f"secagg-channel|{job_id}|{st['round']}|{st['attempt']}"
        to = {}
        for name, info in att.neighbours.items():
            x = int(info["point"])
            plain = json.dumps({"seed": format(seed_shares[x], "x"), "key": format(key_shares[x], "x")}).encode()
            to[name] = channel.seal(
                channel.agree(att.c, info["c"], purpose), plain, _context(job_id, st["round"], st["attempt"], me, name)
            )
        return {"round": st["round"], "attempt": st["attempt"], "stage": "shares", "to": to}

    def _masked(self, job_id: str, st: dict) -> dict:
        att, me, trained = self.attempt, self.me(), self.trained
        purpose = f"secagg-channel|{job_id}|{st['round']}|{st['attempt']}"
        for sender, sealed in st["inbox"].items():
            info = att.neighbours[sender]
            plain = channel.open_sealed(
                channel.agree(att.c, info["c"], purpose),
                sealed,
                _context(job_id, st["round"], st["attempt"], sender, me),
            )
            shares = json.loads(plain)
            att.received[sender] = (shares["seed"], shares["key"])
        values = self._quantised(st)
        mask_purpose = masking.mask_purpose(job_id, st["round"], st["attempt"])
        seeds = [(att.seed, 1)] + [
            (channel.agree(att.s, att.neighbours[v]["s"], mask_purpose), masking.pair_sign(me, v))
            for v in st["partners"]
        ]
        masking.apply_masks(values, seeds)
        body = {"round": st["round"], "attempt": st["attempt"], "num_examples": trained.examples,
                "metrics": trained.metrics}  # fmt: skip
        return transfer.submit(self.call, body, wcodec.encode(values))

    def _quantised(self, st: dict) -> dict[str, np.ndarray]:
        """The device's weighted update (and weight, and DP bit) as integers below 2**bits, noised for DP."""
        trained, rng = self.trained, np.random.default_rng()
        clip_range, bits = float(st["clip_range"]), int(st["bits"])
        noise = trained.noise.get("dp_noise_stddev", 0.0)
        # DP: one vote per device (the noise was sized for a sum of clipped changes); else FedAvg's weight
        weight = 1.0 if "dp_noise_stddev" in trained.noise else min(1.0, trained.examples / float(st["examples_cap"]))
        out = {}
        for name, w in trained.weights.items():
            v = w.astype(np.float64) * weight
            if noise > 0:
                v = v + rng.normal(0.0, noise, v.shape)
            out[name] = masking.quantise(v, clip_range, bits, rng)
        count_noise = trained.noise.get("dp_count_stddev", 0.0)
        bit = float(trained.unclipped) + (rng.normal(0.0, count_noise) if count_noise > 0 else 0.0)
        out[masking.WEIGHT] = masking.quantise(np.array([weight]), clip_range, bits, rng)
        out[masking.UNCLIPPED] = masking.quantise(np.array([bit]), clip_range, bits, rng)
        return out

    def _unmask(self, job_id: str, st: dict) -> dict:
        att = self.attempt
        survivors, dropped = set(st["survivors"]), set(st["dropped"])
        both = survivors & dropped
        if both:  # a function that asks both kinds for one device would learn its update: refuse
            raise RuntimeError(f"asked for both kinds of share of {sorted(both)}; refusing to reveal")
        seeds = {v: att.received[v][0] for v in survivors}
        keys = {v: att.received[v][1] for v in dropped}
        return {"round": st["round"], "attempt": st["attempt"], "stage": "unmask", "seeds": seeds, "keys": keys}
