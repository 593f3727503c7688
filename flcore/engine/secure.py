"""Secure rounds (SecAgg+, Bell et al. 2020): synchronous rounds whose updates the function sees only masked.

The function relays; each stage is a poll (:mod:`flcore.actions.secure` takes the messages):

1. ``keys``: each picked device trains, then advertises two X25519 public keys. The stage ends when all
   picked did, or at the round's deadline with enough of them (the members, U0).
2. ``shares``: each member gets its neighbours' keys (a sparse random graph over U0) and sends each
   neighbour, encrypted for it, a Shamir share of its self-mask seed and one of its mask key (U1).
3. ``masked``: each member of U1 gets the shares sent to it and submits its update quantised and
   masked: its self mask plus one pairwise mask per neighbour in U1 (U2: those whose vector arrived).
4. ``unmask``: each survivor is told which neighbours survived and which dropped; it reveals, for each,
   the share of the seed (survivor) or of the key (dropped): never both for one device.

With enough shares the function rebuilds the survivors' seeds and the dropped devices' keys, removes
the masks from the sum of the masked vectors, and gets the sum of the survivors' quantised updates:
nothing else. A stage that ends with too few devices, or shares that cannot rebuild a secret, fails
the attempt: the round starts again with fresh keys (recorded in ``secure_failures``), and after
``max_attempts`` the job stops; never with a wrong model.

Where the protocol stands is the job document's ``secure`` field, moved by conditional updates like
every other transition; a round without one is at attempt 0, stage ``keys``.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from flcore.domain.job import Job
from flcore.engine import lifecycle, pacing
from flcore.engine.closing import close_round
from flcore.engine.sync import SyncRounds, repick, replace_silent
from flcore.errors import Conflict
from flcore.shared import clock
from flcore.shared import weights as wcodec
from flcore.shared.aggregation import InMemory
from flcore.shared.datasets import TRAIN_CLASS_COUNTS
from flcore.shared.partition import share_sizes
from flcore.shared.secagg import channel, masking, shamir
from flcore.shared.weights import Weights
from flcore.storage.jobs import ending
from flcore.storage.store import Store

log = logging.getLogger(__name__)

STAGES = ("keys", "shares", "masked", "unmask")
ASKED = {"keys": "", "shares": "u0", "masked": "u1", "unmask": "u2"}  # who each stage waits for
STAGE_POLL_S = 0.5  # a member between stages asks again this soon: stages take seconds


def state(job: Job) -> dict:
    """Where the round's protocol stands."""
    held = job.doc.get("secure")
    if held and held.get("round") == job.round:
        return held
    return {"round": job.round, "attempt": 0, "stage": "keys"}


def _expect(job: Job, st: dict) -> dict:
    if job.doc.get("secure", {}).get("round") != job.round:
        return {"secure.round": {"$ne": job.round}}
    return {"secure.round": job.round, "secure.attempt": st["attempt"], "secure.stage": st["stage"]}


def graph(job: Job, st: dict) -> dict[str, list[str]]:
    """The attempt's neighbour graph over its members (U0)."""
    cfg = job.config.secure_settings
    return masking.neighbours(st["u0"], cfg.degree, f"{job.id}|{job.round}|{st['attempt']}|{job.config.seed}")


def share_point(st: dict, client_id: str) -> int:
    """The point at which a member's neighbours evaluate the shares they give it (its place in U0, from 1)."""
    return st["u0"].index(client_id) + 1


def needed(job: Job) -> int:
    """The fewest devices a stage may end with: the job's min_updates (at least 2)."""
    return max(2, job.config.min_updates_needed)


class SecureRounds(SyncRounds):
    """Synchronous rounds run through the four stages above."""

    def assign(self, store: Store, job: Job, client_id: str, now: float) -> int | None:
        """A picked device trains (or reuses what it trained) and advertises keys, once per attempt."""
        st = state(job)
        if st["stage"] != "keys" or client_id not in job.picked:
            return None
        if store.has_sent(job.id, job.round, st["attempt"], "keys", client_id):
            return None
        return job.doc.get("model_round") or 0

    def task(self, store: Store, job: Job, client_id: str, now: float) -> dict | None:
        """What a member is to send in this stage, with what it needs to, once."""
        st = state(job)
        stage = st["stage"]
        if stage == "keys" or client_id not in st.get(ASKED[stage], []):
            return None
        sent = (
            store.has_update(job.id, job.round, client_id)
            if stage == "masked"
            else store.has_sent(job.id, job.round, st["attempt"], stage, client_id)
        )
        if sent:
            return None
        links = graph(job, st)[client_id]
        head = {"round": job.round, "attempt": st["attempt"], "stage": stage}
        if stage == "shares":
            keys = {m["client_id"]: m for m in store.messages_from(job.id, job.round, st["attempt"], "keys", links)}
            return {
                "secure": {
                    **head,
                    "point": share_point(st, client_id),
                    "threshold": job.config.secure_settings.threshold_for(len(links)),
                    "neighbours": {
                        v: {"c": keys[v]["c"], "s": keys[v]["s"], "point": share_point(st, v)} for v in links
                    },
                }
            }
        if stage == "masked":
            shared = set(st["u1"])
            return {
                "secure": {
                    **head,
                    "inbox": store.inbox(job.id, job.round, st["attempt"], client_id, links),
                    "partners": [v for v in links if v in shared],
                    "examples_cap": examples_cap(job),
                    "clip_range": job.config.secure_settings.clip_range,
                    "bits": job.config.secure_settings.bits,
                }
            }
        survivors, shared = set(st["u2"]), set(st["u1"])
        return {
            "secure": {
                **head,
                "survivors": [v for v in links if v in survivors],
                "dropped": [v for v in links if v in shared and v not in survivors],
            }
        }

    def reply_fields(self, job: Job, base: int | None) -> dict:
        st = state(job)
        return {"secure": {"attempt": st["attempt"], "stage": st["stage"]}}

    def wait_hint(self, job: Job, now: float) -> float:
        return pacing.until_round_end(job, now) if state(job)["stage"] == "keys" else STAGE_POLL_S

    def check_submit(self, store: Store, job: Job, client: dict, rnd: int) -> None:
        """Only a masked vector of a member of U1, in the ``masked`` stage, counts."""
        super().check_submit(store, job, client, rnd)
        st = state(job)
        if st["stage"] != "masked" or client["_id"] not in st.get("u1", []):
            raise Conflict(f"round {rnd} takes no masked update from this device now (stage {st['stage']})")

    def leave(self, store: Store, job: Job, client_id: str, now: float) -> None:
        if state(job)["stage"] == "keys":
            super().leave(store, job, client_id, now)  # after the keys, a device that leaves has dropped out

    def waiting_updates(self, store: Store, job: Job) -> int:
        return len(state(job).get("u2", [])) or super().waiting_updates(store, job)

    def status(self, job: Job) -> dict:
        st = state(job)
        shown = {k: len(st[k]) for k in ("u0", "u1", "u2") if k in st}
        return {"secure": {"attempt": st["attempt"], "stage": st["stage"], **shown}}

    def advance(self, store: Store, job: Job, now: float) -> Job:
        st = state(job)
        stage = st["stage"]
        if stage == "keys":
            return self._keys(store, job, st, now)
        asked = set(st[ASKED[stage]])
        if now < st["deadline"] and self._count(store, job, st) < len(asked):
            return job  # a count, not a list: every poll comes here
        done = set(self._answered(store, job, st))
        answered = done & asked
        if answered != asked and now < st["deadline"]:
            return job
        if len(answered) < needed(job):
            return self._fail(store, job, st, f"stage {stage}: {len(answered)} of {len(asked)} answered", now)
        if stage == "unmask":
            try:
                rebuild(store, job, st)
            except Unrecoverable as exc:
                if answered != asked or exc.final:  # with what came, the masks cannot all go
                    return self._fail(store, job, st, str(exc), now)
                return job
            return lifecycle.reloaded(store, job, close_round(store, job, now))
        nxt = {"shares": ("masked", "u1"), "masked": ("unmask", "u2")}[stage]
        return self._move(store, job, st, nxt[0], {nxt[1]: sorted(answered)}, now)

    def _count(self, store: Store, job: Job, st: dict) -> int:
        if st["stage"] == "masked":
            return store.count_updates(job.id, job.round)
        return store.count_messages(job.id, job.round, st["attempt"], st["stage"])

    def _answered(self, store: Store, job: Job, st: dict) -> list[str]:
        if st["stage"] == "masked":
            return store.submitted_clients(job.id, job.round)
        return store.senders(job.id, job.round, st["attempt"], st["stage"])

    def _keys(self, store: Store, job: Job, st: dict, now: float) -> Job:
        picked = set(job.picked)
        sent = [c for c in store.senders(job.id, job.round, st["attempt"], "keys") if c in picked]
        if picked and len(sent) >= len(picked):
            return self._move(store, job, st, "shares", {"u0": sorted(sent)}, now)
        job = replace_silent(store, job, sent, now)
        if now >= job.doc["deadline"]:
            if len(sent) >= needed(job):
                return self._move(store, job, state(job), "shares", {"u0": sorted(sent)}, now)
            moved = repick(store, job, sent, now)
            return Job.of(moved) if moved else job
        return job

    def _move(self, store: Store, job: Job, st: dict, stage: str, members: dict, now: float) -> Job:
        kept = {k: st[k] for k in ("u0", "u1", "u2") if k in st}
        fields = {
            "round": job.round,
            "attempt": st["attempt"],
            "stage": stage,
            **kept,
            **members,
            "deadline": now + job.config.secure_settings.stage_timeout_s,
        }
        return lifecycle.reloaded(
            store, job, store.move_secure(job.id, job.round, _expect(job, st), {"$set": {"secure": fields}})
        )

    def _fail(self, store: Store, job: Job, st: dict, reason: str, now: float) -> Job:
        """The attempt cannot give the sum: start again with fresh keys among those still answering, or
        stop the job after ``max_attempts``."""
        cfg = job.config
        record = {"round": job.round, "attempt": st["attempt"], "stage": st["stage"], "reason": reason, "at": now}
        log.warning(
            "job %s round %s: secure aggregation attempt %s failed: %s", job.id, job.round, st["attempt"], reason
        )
        update: dict = {"$push": {"secure_failures": record}}
        if st["attempt"] + 1 >= cfg.secure_settings.max_attempts:
            why = f"secure aggregation failed {st['attempt'] + 1} times in round {job.round} (last: {reason})"
            update["$set"] = ending("stopped", why, clock.now())
        else:
            alive = sorted(set(self._answered(store, job, st)) & set(st.get(ASKED[st["stage"]], job.picked)))
            picked = alive if len(alive) >= needed(job) else job.picked
            update["$set"] = {
                "secure": {"round": job.round, "attempt": st["attempt"] + 1, "stage": "keys"},
                "picked": picked,
                "deadline": now + cfg.round_timeout_s,
            }
        moved = store.move_secure(job.id, job.round, _expect(job, st), update)
        if moved is not None:
            store.drop_round_updates(job.id, job.round)  # masked under the failed attempt's keys: void
        return lifecycle.reloaded(store, job, moved)

    def collect(self, store: Store, leased: Job, current: Weights | None, now: float):
        """The survivors' weighted mean, unmasked: the sum of their masked vectors less every mask."""
        st = state(leased)
        cfg = leased.config.secure_settings
        survivors = set(st["u2"])
        docs = [d for d in store.load_updates(leased.id, leased.round) if d["client_id"] in survivors]
        total: dict[str, np.ndarray] = {}
        for doc in docs:
            for name, t in wcodec.decode(store.update_weights(doc)).items():
                if name in total:
                    np.add(total[name], t, out=total[name])
                else:
                    total[name] = t.copy()
        seeds, keys = rebuild(store, leased, st)
        masking.apply_masks(total, [(s, -1) for s in seeds.values()] + _dropped_pairs(store, leased, st, keys))
        k = len(docs)
        weight = float(masking.dequantise(total.pop(masking.WEIGHT), k, cfg.clip_range, cfg.bits)[0])
        unclipped = float(masking.dequantise(total.pop(masking.UNCLIPPED), k, cfg.clip_range, cfg.bits)[0])
        if weight <= 0:
            raise ValueError("the survivors' weights sum to nothing")
        mean = {
            n: (masking.dequantise(t, k, cfg.clip_range, cfg.bits) / weight).astype(np.float32)
            for n, t in total.items()
        }
        extra = {
            "secure": {
                "attempt": st["attempt"],
                "members": len(st["u0"]),
                "shared": len(st["u1"]),
                "survivors": k,
                "dropped": len(st["u1"]) - len(st["u2"]),
                "unclipped_sum": unclipped,
            }
        }
        return docs, InMemory([(mean, weight)]), extra

    def committed(self, store: Store, job: Job) -> None:
        store.drop_messages(job.id, before_round=job.round)  # the relayed keys and shares of closed rounds


class Unrecoverable(Exception):
    """The masks cannot all be removed: too few shares of a secret yet, or (``final``) shares that do not
    rebuild what their owner committed to."""

    def __init__(self, message: str, final: bool = False):
        super().__init__(message)
        self.final = final


def examples_cap(job: Job) -> int:
    """What a device divides its examples by for its weight in the average (at most 1): the largest share
    of a built-in data set, or all devices' rows together for a declared one (no device exceeds either)."""
    if job.config.task is not None:
        return max(1, int(job.doc.get("encoding", {}).get("rows", 1)))
    return max(1, max(share_sizes(TRAIN_CLASS_COUNTS[job.config.dataset], job.config.partition_spec(0))))


def _revealed(store: Store, job: Job, st: dict, kind: str) -> dict[str, list[tuple[int, int]]]:
    """Per device, the (point, value) shares of its seed (``seeds``) or key (``keys``) the survivors revealed."""
    out: dict[str, list[tuple[int, int]]] = {}
    for msg in store.messages(job.id, job.round, st["attempt"], "unmask"):
        point = share_point(st, msg["client_id"])
        for owner, value in (msg.get(kind) or {}).items():
            out.setdefault(owner, []).append((point, int(value, 16)))
    return out


def rebuild(store: Store, job: Job, st: dict) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The survivors' self-mask seeds and the dropped devices' mask keys, each checked against what its
    owner advertised (the seed's SHA-256, the key's public half); :class:`Unrecoverable` if not possible."""
    cfg, links = job.config.secure_settings, graph(job, st)
    advertised = {m["client_id"]: m for m in store.messages(job.id, job.round, st["attempt"], "keys")}
    dropped = sorted(set(st["u1"]) - set(st["u2"]))
    out: tuple[dict[str, bytes], dict[str, bytes]] = ({}, {})
    for (kind, owners), rebuilt in zip((("seeds", st["u2"]), ("keys", dropped)), out):
        revealed = _revealed(store, job, st, kind)
        for owner in owners:
            have, need = revealed.get(owner, []), cfg.threshold_for(len(links[owner]))
            if len(have) < need:
                raise Unrecoverable(f"{len(have)} of the {need} shares needed to remove the masks of {owner} arrived")
            value = shamir.combine(have)
            secret = shamir.to_bytes(value) if value < 2**256 else b""
            ok = bool(secret) and (
                hashlib.sha256(secret).hexdigest() == advertised[owner]["commit"]
                if kind == "seeds"
                else channel.public_of(secret) == advertised[owner]["s"]
            )
            if not ok:
                raise Unrecoverable(f"the shares revealed for {owner} do not rebuild its {kind[:-1]}", final=True)
            rebuilt[owner] = secret
    return out


def _dropped_pairs(store: Store, job: Job, st: dict, keys: dict[str, bytes]) -> list[tuple[bytes, int]]:
    """The pairwise masks survivors added toward devices that dropped after sharing, to take back out."""
    links = graph(job, st)
    public = {m["client_id"]: m["s"] for m in store.messages(job.id, job.round, st["attempt"], "keys")}
    survivors = set(st["u2"])
    purpose = masking.mask_purpose(job.id, job.round, st["attempt"])
    out = []
    for gone, secret in sorted(keys.items()):
        for w in links[gone]:
            if w in survivors:  # w added sign(w, gone) * PRG(s_w,gone): take it back out
                out.append((channel.agree(secret, public[w], purpose), -masking.pair_sign(w, gone)))
    return out
