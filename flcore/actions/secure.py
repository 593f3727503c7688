"""The ``secure`` action: a device's message in a secure round's stage (see :mod:`flcore.engine.secure`).

Checked before anything is written: the round, attempt and stage must be the
current ones, the device a member asked in this stage, the message of the
stage's form, addressed only to its neighbours, and a survivor's reveal must
hold one kind of share per neighbour, never both. A second message for the
same stage is refused (a replay changes nothing).
"""

from __future__ import annotations

import re

from flcore.actions.request import MAX_ROUND, Request
from flcore.domain.job import Job
from flcore.engine import lifecycle, secure
from flcore.errors import Conflict, Forbidden, Invalid
from flcore.shared import clock
from flcore.shared.secagg import channel, shamir

MAX_SEALED = 2048  # characters of one encrypted pair of shares (about 300 are used)
_HEX = re.compile(r"[0-9a-f]{1,131}")
_COMMIT = re.compile(r"[0-9a-f]{64}")


def message(req: Request) -> dict:
    """Take one device's message for the current stage; the job moves on if the stage is complete."""
    store, client = req.store, req.client
    job = Job.load(store, client["job_id"])
    if job.config.secure_aggregation is None:
        raise Conflict(f"job {job.id} does not aggregate securely")
    st = secure.state(job)
    rnd, attempt = req.integer("round", 0, MAX_ROUND), req.integer("attempt", 0, 100)
    stage = req.body.get("stage")
    if job.state != "running" or (rnd, attempt, stage) != (job.round, st["attempt"], st["stage"]):
        raise Conflict(
            f"round {rnd} attempt {attempt} stage {stage!r} is not open: the job is {job.state}, round "
            f"{job.round}, attempt {st['attempt']}, stage {st['stage']!r}"
        )
    me = client["_id"]
    asked = job.picked if stage == "keys" else st.get(secure.ASKED[stage], [])
    if me not in asked:
        raise Forbidden(f"this device is not asked for {stage} in round {rnd} attempt {attempt}")
    body = _CHECKS[stage](req.body, job, st, me)
    if not store.add_message(job.id, rnd, attempt, stage, me, body):
        raise Invalid(f"this device already sent its {stage} for round {rnd} attempt {attempt}")
    now = clock.now()
    store.touch_client(me, now)
    job = lifecycle.advance(store, Job.load(store, job.id), now)
    return {"accepted": True, "round": rnd, "attempt": attempt, "stage": stage, "retry_after": secure.STAGE_POLL_S}


def _keys(body: dict, job: Job, st: dict, me: str) -> dict:
    c, s, commit = body.get("c"), body.get("s"), body.get("commit")
    if not channel.valid_public(c) or not channel.valid_public(s) or c == s:
        raise Invalid("keys need two different X25519 public keys, c and s, base64 (32 bytes each)")
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        raise Invalid("keys need commit: the SHA-256 (hex) of the device's self-mask seed")
    return {"c": c, "s": s, "commit": commit}


def _shares(body: dict, job: Job, st: dict, me: str) -> dict:
    to = body.get("to")
    links = set(secure.graph(job, st)[me])
    if not isinstance(to, dict) or set(to) != links:
        raise Invalid(f"shares go to exactly this device's {len(links)} neighbours, one sealed pair each (to)")
    if any(not isinstance(v, str) or not 0 < len(v) <= MAX_SEALED for v in to.values()):
        raise Invalid(f"each sealed pair of shares is base64 text of at most {MAX_SEALED} characters")
    return {"to": to}


def _unmask(body: dict, job: Job, st: dict, me: str) -> dict:
    seeds, keys = body.get("seeds"), body.get("keys")
    if not isinstance(seeds, dict) or not isinstance(keys, dict):
        raise Invalid("unmask needs seeds and keys: neighbour -> share (hex)")
    both = sorted(set(seeds) & set(keys))
    if both:
        raise Invalid(f"never both kinds of share for one device: {both[:5]} got a seed share and a key share")
    links, survivors = set(secure.graph(job, st)[me]), set(st["u2"])
    dropped = set(st["u1"]) - survivors
    if set(seeds) != links & survivors:
        raise Invalid("seed shares are for exactly this device's neighbours that survived")
    if set(keys) != links & dropped:
        raise Invalid("key shares are for exactly this device's neighbours that dropped out after sharing")
    for value in (*seeds.values(), *keys.values()):
        if not isinstance(value, str) or not _HEX.fullmatch(value) or int(value, 16) >= shamir.PRIME:
            raise Invalid("a share is a field element in lowercase hex")
    return {"seeds": seeds, "keys": keys}


_CHECKS = {"keys": _keys, "shares": _shares, "unmask": _unmask}


def check_attempt(job: Job, body: dict) -> None:
    """A masked vector names the attempt whose keys masked it; one of another attempt is refused."""
    st = secure.state(job)
    if body.get("attempt") != st["attempt"]:
        raise Conflict(f"this round is at attempt {st['attempt']}: a vector masked for another cannot be unmasked")
