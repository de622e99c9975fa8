"""The fuzz corpus: thousands of random and mutated Gateway frames, the same on every run.

The corpus is built deterministically, in two layers:

* a synchronous, derandomized hypothesis run draws pools of valid COMMANDs, JSON values (unicode,
  odd floats, big integers, nested shapes), texts and byte strings;
* a seeded ``random.Random`` turns the pools into thousands of frames: valid commands, commands
  with fields deleted, retyped, made huge or re-versioned, character-damaged JSON, random JSON,
  text and bytes, CANCELs, QUERYs, other message types in odd casing, duplicates, deep nesting
  and oversized frames.

(Drawing every frame as its own hypothesis example would cost ~10 ms a frame on a small machine.)
Building it is pure (``tests/unit/test_fuzz_corpus.py``); the storm that sends it to a running
daemon is ``tests/integration/test_fuzz.py``.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.builders import command

MIN_FRAMES = 3000
POOL_SIZE = 120
SEED = 20240120
DEVICES = ["pillar-001", "pillar-002", "pillar-slow"]
READABLE = ["door_state", "brightness", "temperature", "relay", "mode", "status_word"]

# ---------------------------------------------------------------------- hypothesis pools

# Finite numbers only: a non-finite one (1e999) echoed in a callback has its own test in
# tests/integration/test_fuzz.py.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def valid_command(draw: st.DrawFn) -> dict[str, Any]:
    """The body of a COMMAND the edge accepts (requestRef and casing are set later)."""
    device = draw(st.sampled_from(DEVICES))
    kind = draw(st.sampled_from(["read", "write", "code", "batch", "complex"]))
    cmd: dict[str, Any]
    if kind == "read":
        points = draw(st.lists(st.sampled_from(READABLE), min_size=1, max_size=4))
        cmd = {"operationType": "read", "parameters": {"points": points}}
    elif kind == "write":
        point = draw(st.sampled_from(["brightness", "relay", "mode"]))
        value: Any
        if point == "relay":
            value = draw(st.booleans())
        else:
            value = draw(st.integers(0, 100 if point == "brightness" else 65535))
        cmd = {"operationType": "write", "parameters": {"values": {point: value}}}
    elif kind == "code":
        code = draw(st.sampled_from(["SET_BRIGHTNESS", "OPEN_DOOR", "STATUS", "COMMISSION"]))
        params = {"brightness": draw(st.integers(0, 100))} if code == "SET_BRIGHTNESS" else {}
        cmd = {"commandCode": code, "operationType": "execute", "parameters": params}
    elif kind == "batch":
        targets = draw(
            st.sampled_from(["pillar-*", "pillar-00?", ["pillar-001", "pillar-002"], "*"])
        )
        cmd = {
            "commandType": "BATCH",
            "operationType": "read",
            "deviceType": "pillar",
            "parameters": {"targets": targets, "batch": True, "points": ["brightness"]},
        }
    else:
        cmd = {
            "commandType": "COMPLEX",
            "commandCode": "COMMISSION",
            "deviceId": device,
            "parameters": {
                "steps": [
                    {"operationType": "write", "parameters": {"values": {"mode": 2}}},
                    {"delayMs": draw(st.integers(0, 50))},
                    {"commandCode": "STATUS", "continueOnError": True},
                    {"operationType": "read", "parameters": {"points": ["status_word"]}},
                ]
            },
        }
    body: dict[str, Any] = {
        "type": "COMMAND",
        "requestRef": "",
        "targetClientId": f"edge-001:{device}",
        "command": cmd,
        "timestamp": "2024-01-20T10:00:00.000Z",
    }
    if draw(st.booleans()):
        body["priority"] = draw(st.sampled_from(["low", "normal", "high", "urgent"]))
    if draw(st.booleans()):
        body["timeout"] = draw(st.integers(50, 10_000) | st.floats(50.0, 10_000.0))
    if draw(st.booleans()):
        body["callback"] = draw(JSON_VALUES)
    if draw(st.booleans()):
        body["version"] = "1.0"
    return body


@dataclass
class Pools:
    """Values drawn by hypothesis, for the seeded generator to combine."""

    commands: list[dict[str, Any]] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)


def draw_pools() -> Pools:
    """Run hypothesis once, deterministically, collecting what it draws."""
    pools = Pools()

    @settings(
        max_examples=POOL_SIZE,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(valid_command(), JSON_VALUES, st.text(max_size=300), st.binary(max_size=300))
    def collect(cmd: dict[str, Any], value: Any, text: str, blob: bytes) -> None:
        pools.commands.append(cmd)
        pools.values.append(value)
        pools.texts.append(text)
        pools.blobs.append(blob)

    collect()
    return pools


# ---------------------------------------------------------------------- the seeded generator


@dataclass
class Frame:
    """One frame of the storm and what the edge must do with it."""

    data: str | bytes
    role: str  # "command": exactly one terminal each; "cancel": none; "other": anything valid
    ref: str | None = None


def paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path inside nested objects."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*prefix, key)
            yield from paths(inner, (*prefix, key))


def nested(depth: int, leaf: Any) -> Any:
    """``leaf`` inside ``depth`` alternating arrays and objects."""
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"n": value}
    return value


def role_of(body: Any, ref: str | None) -> str:
    """What the edge must do with an undamaged frame of this body."""
    if not isinstance(body, dict) or ref is None or body.get("requestRef") != ref:
        return "other"
    mtype = body.get("type")
    if not isinstance(mtype, str):
        return "other"
    if mtype.strip().upper() == "COMMAND":
        return "command"
    version = body.get("version", "1.0")
    if (
        mtype.strip().upper() == "CANCEL"
        and isinstance(version, str)
        and version.split(".", 1)[0].strip() == "1"
    ):
        return "cancel"
    return "other"


class Storm:
    """Builds the frames of the storm from the pools with a seeded random generator."""

    KINDS: dict[str, int] = {
        "valid": 14,
        "mutated": 26,
        "damaged": 12,
        "json": 6,
        "text": 5,
        "bytes": 5,
        "cancel": 7,
        "query": 7,
        "other-type": 7,
        "dup": 7,
        "dup-body": 3,
        "wrong-edge": 1,
        "near-miss": 6,
    }

    def __init__(self, pools: Pools, seed: int = SEED) -> None:
        self.pools = pools
        self.rnd = random.Random(seed)
        self.frames: list[Frame] = []
        self.commands: list[Frame] = []
        self.refs = 0

    # -- helpers

    def fresh_ref(self) -> str:
        self.refs += 1
        return f"fz{self.refs:06d}"

    def odd_case(self, word: str) -> str:
        return "".join(c.upper() if self.rnd.random() < 0.5 else c.lower() for c in word)

    def value(self) -> Any:
        """A wrong-typed or strange value for any field."""
        pick = self.rnd.random()
        if pick < 0.55:
            return copy.deepcopy(self.rnd.choice(self.pools.values))
        if pick < 0.75:
            return self.rnd.choice(self.pools.texts)
        if pick < 0.85:
            return self.huge()
        return self.rnd.choice(
            [None, True, False, 0, -1, 1.5, -0.0, 2**63, -(2**64), 1e308, [], {}, "", " ", "\x00"]
        )

    def huge(self) -> Any:
        pick = self.rnd.randrange(6)
        if pick == 0:
            # at most 20k characters: longer ones have their own test (over-long error messages)
            text = self.rnd.choice(self.pools.texts) or "x"
            return (text * (20_000 // len(text) + 1))[:20_000]
        if pick == 1:
            return self.rnd.choice([10**20, -(10**40), 10**400, 1.7e308, 5e-324])
        if pick == 2:
            return nested(self.rnd.choice([20, 100, 300]), "deep")
        if pick == 3:
            return list(range(5000))
        if pick == 4:
            return {f"k{i}": i for i in range(3000)}
        return "".join(
            chr(self.rnd.choice([0x7F, 0xE9, 0x2028, 0xFEFF, 0x1F600])) for _ in range(5000)
        )

    def command_body(self) -> dict[str, Any]:
        """A valid COMMAND from the pool, in random casing."""
        body = copy.deepcopy(self.rnd.choice(self.pools.commands))
        body["type"] = self.odd_case("command")
        cmd = body["command"]
        if "commandType" in cmd:
            cmd["commandType"] = self.odd_case(cmd["commandType"])
        if "operationType" in cmd:
            cmd["operationType"] = self.odd_case(cmd["operationType"])
        if "priority" in body:
            body["priority"] = self.odd_case(body["priority"])
        return body

    def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        """Delete, retype, enlarge or re-version fields of a COMMAND."""
        for _ in range(self.rnd.randint(1, 3)):
            choices = [p for p in paths(body) if p != ("requestRef",)]
            if not choices:
                break
            path = self.rnd.choice(choices)
            parent = body
            for key in path[:-1]:
                parent = parent[key]
            how = self.rnd.random()
            if how < 0.3:
                del parent[path[-1]]
            elif how < 0.8:
                parent[path[-1]] = self.value()
            else:
                parent[path[-1]] = self.huge()
        if self.rnd.random() < 0.15:
            body["version"] = self.rnd.choice(
                ["1.0", "1.5", "1", "2.0", "0.9", "", " 1.0 ", "1.0.0", 1, 2.0, None, ["1.0"]]
            )
        if self.rnd.random() < 0.08:
            body["requestRef"] = self.rnd.choice([self.value(), "", None, 7])
        return body

    def damage(self, text: str) -> str:
        """Character-level damage to a serialised frame."""
        for _ in range(self.rnd.randint(1, 3)):
            at = self.rnd.randrange(max(len(text), 1))
            char = self.rnd.choice([*self.pools.texts, '"', "{", "}", "\\", ",", ":"])[:1] or "~"
            how = self.rnd.randrange(6)
            if how == 0:
                text = text[:at]
            elif how == 1:
                text = text[:at] + text[at + 1 :]
            elif how == 2:
                text = text[:at] + char + text[at:]
            elif how == 3:
                text = text[:at] + char + text[at + 1 :]
            elif how == 4:
                text = text[:at] + text[at : at + 20] * 3 + text[at + 20 :]
            else:
                text = text.replace("}", "]", 1)
        return text

    def earlier(self) -> Frame | None:
        return self.rnd.choice(self.commands) if self.commands else None

    def add(self, data: str | bytes, role: str = "other", ref: str | None = None) -> None:
        frame = Frame(data, role, ref)
        self.frames.append(frame)
        if role == "command":
            self.commands.append(frame)

    def add_body(self, body: Any, ref: str | None, *, damaged: bool = False) -> None:
        """Serialise (sometimes as a binary frame, sometimes without ASCII escapes) and add."""
        text = json.dumps(body, ensure_ascii=not damaged and self.rnd.random() < 0.5)
        role = role_of(body, ref)
        if damaged:
            text = self.damage(text)
            role = "other"
        data = text.encode("utf-8")
        if len(data) > 900_000:  # oversized frames are added on purpose by special_frames()
            return
        self.add(data if self.rnd.random() < 0.1 else text, role, ref)

    # -- the kinds of frame

    def one(self) -> None:
        kind = self.rnd.choices(list(self.KINDS), weights=list(self.KINDS.values()))[0]
        ref = self.fresh_ref()
        if kind in ("valid", "mutated", "damaged", "wrong-edge"):
            body = self.command_body()
            body["requestRef"] = ref
            if kind == "mutated":
                body = self.mutate(body)
            elif kind == "wrong-edge":
                body["targetClientId"] = self.rnd.choice(["edge-002:pillar-001", ":", "edge-001x"])
            if self.rnd.random() < 0.3:
                body["x-" + self.odd_case("extra")] = self.value()
            self.add_body(body, ref, damaged=kind == "damaged")
        elif kind == "near-miss":
            device = self.rnd.choice(DEVICES)
            body = self.rnd.choice(
                [
                    command(ref, device, op="write", params={"values": {"door_state": 1}}),
                    command(ref, device, op="read", params={"points": ["door_cmd"]}),
                    command(ref, device, "SET_BRIGHTNESS", params={"brightness": 140}),
                    command(ref, device, "SET_BRIGHTNESS", params={"brightnes": 50}),
                    command(ref, device, op="read", params={"points": ["nope"]}),
                    command(ref, device, "REBOOT"),
                    command(ref, "pillar-999", "STATUS"),
                    command(ref, device, "STATUS", ctype="BATCH", params={"targets": "x-*"}),
                    command(ref, device, "STATUS", ctype="COMPLEX", params={"steps": []}),
                ]
            )
            body["type"] = self.odd_case("command")
            self.add_body(body, ref)
        elif kind == "json":
            self.add_body(self.value(), None)
        elif kind == "text":
            self.add(self.rnd.choice(self.pools.texts))
        elif kind == "bytes":
            self.add(self.rnd.choice(self.pools.blobs))
        elif kind == "cancel":
            target = self.earlier()
            body = {"type": self.odd_case("cancel")}
            if target is not None and self.rnd.random() < 0.7:
                body["requestRef"] = target.ref
                ref = target.ref or ref
            elif self.rnd.random() < 0.5:
                body["requestRef"] = self.value()
            if self.rnd.random() < 0.3:
                body["reason"] = self.value()
            self.add_body(body, ref)
        elif kind == "query":
            body = {"type": self.odd_case("query"), "requestRef": ref}
            if self.rnd.random() < 0.85:
                body["query"] = self.rnd.choice(
                    ["devices", "device", "DEVICES", "Device", "nope", "", self.value()]
                )
            if self.rnd.random() < 0.5:
                body["deviceId"] = self.rnd.choice([*DEVICES, "nope", self.value()])
            if self.rnd.random() < 0.1:
                body["requestRef"] = self.value()
            self.add_body(body, ref)
        elif kind == "other-type":
            mtype = self.rnd.choice(
                [
                    "HEARTBEAT",
                    "pong",
                    "Ping",
                    "REGISTER_ACK",
                    "registered",
                    "ack",
                    "ERROR",
                    "REGISTER",
                    "command_response",
                    "progress_update",
                    "COMMANDS",
                    "",
                    " ",
                ]
            )
            body = {"type": self.odd_case(mtype), "requestRef": ref}
            if self.rnd.random() < 0.2:
                body["type"] = self.value()
            for _ in range(self.rnd.randrange(4)):
                body[self.rnd.choice(self.pools.texts)[:10]] = self.value()
            body["requestRef"] = ref
            self.add_body(body, ref)
        elif kind == "dup":
            target = self.earlier()
            if target is not None:
                self.add(target.data, "command", target.ref)
        else:  # the requestRef of an earlier COMMAND with another body
            target = self.earlier()
            body = self.command_body()
            body["requestRef"] = target.ref if target is not None else ref
            self.add_body(body, body["requestRef"])

    def special_frames(self) -> None:
        """Oversized, deeply nested, empty, exact repeats, a cancel of a queued command."""
        pad = "x" * (1024**2 + 50_000)
        for _ in range(2):
            ref = self.fresh_ref()
            body = {"requestRef": ref, "type": "COMMAND", "pad": pad}
            self.add(json.dumps(body), "command", ref)  # MALFORMED, requestRef still found
        for depth in (10, 100, 500, 5_000, 100_000):
            self.add("[" * depth + "]" * depth)
            self.add('{"a":' * depth + "1" + "}" * depth)
            ref = self.fresh_ref()
            deep = "[" * depth + "]" * depth
            text = json.dumps(command(ref, op="read", params={"points": ["brightness"]}))
            self.add(text[:-1] + f', "x-deep": {deep}}}', "command", ref)
        for data in ("", " ", "{}", "[]", "null", '{"type": null}', '{"type": "COMMAND"}'):
            self.add(data)
        self.add(b"")
        self.add(b"\xff\xfe\x00")
        ref = self.fresh_ref()  # an integer of more digits than Python converts
        text = json.dumps(command(ref, "pillar-001", "SET_BRIGHTNESS", params={"brightness": 1}))
        self.add(text.replace('"brightness": 1', '"brightness": 1' + "0" * 5000), "command", ref)
        ref = "r" * 200_000
        self.add(json.dumps(command(ref, "nope")), "other", ref)
        ref = self.fresh_ref()
        text = json.dumps(command(ref, "pillar-slow", "STATUS", timeout=86_400_000))
        for _ in range(5):
            self.add(text, "command", ref)
        self.add(json.dumps({"type": "CANCEL", "requestRef": ref}), "cancel", ref)

    def build(self, count: int) -> list[Frame]:
        while len(self.frames) < count:
            self.one()
        self.special_frames()
        return self.frames


def build_corpus(count: int = MIN_FRAMES) -> list[Frame]:
    """The storm: the same frames on every run."""
    return Storm(draw_pools()).build(count)
