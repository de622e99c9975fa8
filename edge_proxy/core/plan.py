"""Turn a checked COMMAND and the config into a plan of device steps, before anything runs.

Pure code over config objects: a typo in step 5 of a COMPLEX command, a value out of range, or a
write to a read-only point is a :class:`~edge_proxy.errors.RequestError` here, so steps 1-4
never touch a device.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_proxy.config import (
    CommandConfig,
    CommandsConfig,
    DeviceConfig,
    ProfileConfig,
    check_param,
    param_error,
)
from edge_proxy.core import points as pointcodec
from edge_proxy.errors import RequestError
from edge_proxy.wire.messages import CommandRequest
from edge_proxy.wire.names import OPERATION_TYPES, STEP_KEYS

_WHOLE_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclass
class Step:
    """One unit of device work (or a pause) inside a command."""

    device_id: str
    kind: str  # "read" | "write" | "execute" | "delay"
    label: str
    points: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    continue_on_error: bool = False


def _denied(message: str, fieldname: str) -> RequestError:
    return RequestError("ACCESS_DENIED", message, {"field": fieldname})


def check_params(
    cmd_name: str, cmd: CommandConfig, given: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """Check a command's parameters: no unknown names, required ones present, types, ranges."""
    for name in given:
        if name not in cmd.params:
            declared = ", ".join(sorted(cmd.params)) or "none"
            raise param_error(
                f"{cmd_name} has no parameter {name!r} (declared: {declared})", f"{where}.{name}"
            )
    out: dict[str, Any] = {}
    for name, spec in cmd.params.items():
        if name in given:
            out[name] = check_param(name, spec, given[name], where)
        elif spec.required:
            raise param_error(f"{cmd_name}: parameter {name!r} is required", f"{where}.{name}")
        elif spec.default is not None:
            out[name] = spec.default
    return out


def bind(value: Any, params: Mapping[str, Any], where: str) -> Any:
    """Replace ``"{name}"`` with a parameter (keeping its type) or format a template string."""
    if not isinstance(value, str):
        return value
    m = _WHOLE_PARAM.match(value)
    if m:
        if m.group(1) not in params:
            raise param_error(f"parameter {m.group(1)!r} has no value", where)
        return params[m.group(1)]
    if "{" not in value:
        return value
    try:
        return value.format(**params)
    except (KeyError, IndexError, ValueError) as exc:
        raise param_error(f"cannot fill template {value!r}: {exc}", where) from None


def check_reads(profile: ProfileConfig, names: Any, where: str) -> list[str]:
    """Check a list of point names for reading."""
    if names is None:
        return [n for n, p in profile.points.items() if p.readable]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise param_error("points must be a list of point names", where)
    if not names:
        raise param_error("points is empty", where)
    for i, name in enumerate(names):
        point = profile.points.get(name)
        if point is None:
            raise param_error(f"unknown point {name!r}", f"{where}[{i}]")
        if not point.readable:
            raise _denied(f"point {name!r} is write-only", f"{where}[{i}]")
    return list(dict.fromkeys(names))


def check_writes(profile: ProfileConfig, values: Any, where: str) -> dict[str, Any]:
    """Check point values for writing: declared, writable, right type, in range."""
    if not isinstance(values, dict) or not values:
        raise param_error("values must be a non-empty object of point: value", where)
    for name, value in values.items():
        at = f"{where}.{name}"
        point = profile.points.get(name)
        if point is None:
            raise param_error(f"unknown point {name!r}", at)
        if not point.writable:
            raise _denied(f"point {name!r} is read-only", at)
        try:
            pointcodec.check_write_value(point, value)
        except pointcodec.PointValueError as exc:
            raise param_error(f"{name}: {exc}", at) from None
    return dict(values)


def _write_step(
    device_id: str,
    profile: ProfileConfig,
    write: Mapping[str, Any],
    params: Mapping[str, Any],
    label: str,
    where: str,
    continue_on_error: bool,
) -> Step:
    """The write of a profile command or of one of its steps, its {params} bound and checked."""
    values = {k: bind(v, params, where) for k, v in write.items()}
    return Step(
        device_id,
        "write",
        label,
        values=check_writes(profile, values, where),
        continue_on_error=continue_on_error,
    )


def _profile_steps(
    device_id: str,
    profile: ProfileConfig,
    code: str,
    cmd: CommandConfig,
    params: dict[str, Any],
    where: str,
    continue_on_error: bool = False,
) -> list[Step]:
    if cmd.request is not None:
        return [
            Step(
                device_id,
                "execute",
                code,
                command=code,
                params=params,
                continue_on_error=continue_on_error,
            )
        ]
    if cmd.steps is not None:
        out: list[Step] = []
        for j, st in enumerate(cmd.steps):
            sat = f"{where}.steps[{j}]"
            if st.delay is not None:
                out.append(Step(device_id, "delay", f"{code} step {j + 1}: delay", delay=st.delay))
            elif st.command is not None:
                sub = profile.commands[st.command]
                for s in _profile_steps(
                    device_id, profile, st.command, sub, params, sat, st.continue_on_error
                ):
                    s.label = f"{code} step {j + 1}: {s.label}"
                    out.append(s)
            elif st.write is not None:
                label = f"{code} step {j + 1}: write"
                out.append(
                    _write_step(
                        device_id, profile, st.write, params, label, sat, st.continue_on_error
                    )
                )
            else:
                out.append(
                    Step(
                        device_id,
                        "read",
                        f"{code} step {j + 1}: read",
                        points=list(st.read or []),
                        continue_on_error=st.continue_on_error,
                    )
                )
        return out
    steps = []
    if cmd.write is not None:
        steps.append(
            _write_step(
                device_id, profile, cmd.write, params, f"{code}: write", where, continue_on_error
            )
        )
    if cmd.read is not None:
        steps.append(
            Step(
                device_id,
                "read",
                f"{code}: read",
                points=list(cmd.read),
                continue_on_error=continue_on_error,
            )
        )
    return steps


def resolve_operation(
    device_id: str,
    profile: ProfileConfig,
    command_code: str | None,
    operation_type: str | None,
    parameters: Mapping[str, Any],
    where: str = "command.parameters",
    continue_on_error: bool = False,
) -> list[Step]:
    """The steps of one operation on one device (a profile command or a generic read/write)."""
    if command_code is not None and command_code in profile.commands:
        cmd = profile.commands[command_code]
        params = check_params(command_code, cmd, parameters, where)
        return _profile_steps(
            device_id, profile, command_code, cmd, params, where, continue_on_error
        )
    if operation_type == "read":
        _only(parameters, {"points"}, where)
        names = check_reads(profile, parameters.get("points"), f"{where}.points")
        return [Step(device_id, "read", "read", points=names, continue_on_error=continue_on_error)]
    if operation_type == "write":
        _only(parameters, {"values"}, where)
        values = check_writes(profile, parameters.get("values"), f"{where}.values")
        return [
            Step(device_id, "write", "write", values=values, continue_on_error=continue_on_error)
        ]
    # "command.parameters" -> "command.commandCode"; a step's own place for a step
    code_field = where.rsplit(".parameters", 1)[0] + ".commandCode"
    if command_code is not None:
        known = ", ".join(sorted(profile.commands)) or "none"
        raise RequestError(
            "UNSUPPORTED_COMMAND",
            f"device {device_id} has no command {command_code!r} (profile commands: {known})",
            {"field": code_field},
        )
    raise RequestError(
        "INVALID_COMMAND",
        "a command needs a commandCode, or operationType read or write",
        {"field": code_field},
    )


def _only(parameters: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for name in parameters:
        if name not in allowed:
            raise param_error(
                f"unknown parameter {name!r} (expected {', '.join(sorted(allowed))})",
                f"{where}.{name}",
            )


def match_targets(
    spec: Any,
    device_ids: Sequence[str],
    types: Mapping[str, str],
    device_type: str | None,
    *,
    max_items: int | None = None,
    max_globs: int | None = None,
) -> list[str]:
    """Expand a BATCH target list (ids, globs, ``*``) to device ids, in config order.

    The list's length and its number of globs are checked before anything is expanded, so a
    hostile frame of thousands of globs costs nothing (each glob is matched against every
    device).
    """
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
    elif isinstance(spec, list) and all(isinstance(s, str) for s in spec):
        items = [s.strip() for s in spec if s.strip()]
    else:
        raise RequestError(
            "INVALID_COMMAND",
            "targets must be a string or a list of device ids",
            {"field": "command.parameters.targets"},
        )
    if not items:
        raise RequestError(
            "INVALID_COMMAND", "targets is empty", {"field": "command.parameters.targets"}
        )
    if max_items is not None and len(items) > max_items:
        raise RequestError(
            "INVALID_COMMAND",
            f"{len(items)} targets is above the limit {max_items}",
            {"field": "command.parameters.targets"},
        )
    globs = sum(1 for item in items if item == "*" or any(c in item for c in "*?["))
    if max_globs is not None and globs > max_globs:
        raise RequestError(
            "INVALID_COMMAND",
            f"{globs} glob patterns is above the limit {max_globs}",
            {"field": "command.parameters.targets"},
        )
    chosen: dict[str, None] = {}
    for item in items:
        if item == "*":
            found = [d for d in device_ids if device_type is None or types[d] == device_type]
        elif any(c in item for c in "*?["):
            found = [d for d in device_ids if fnmatch.fnmatchcase(d, item)]
        else:
            found = [item] if item in types else []
        if not found:
            raise RequestError(
                "UNKNOWN_DEVICE",
                f"no device matches {item!r}",
                {"field": "command.parameters.targets", "target": item},
            )
        for d in found:
            chosen[d] = None
    return list(chosen)


class PlanDevice(Protocol):
    """What planning needs to know of a device: its id, config and profile."""

    @property
    def id(self) -> str:
        """The device id."""
        ...

    @property
    def config(self) -> DeviceConfig:
        """The device's config entry."""
        ...

    @property
    def profile(self) -> ProfileConfig:
        """The device's profile."""
        ...


@dataclass
class Plan:
    """What a command will do: its targets, and its steps (or, for a BATCH, steps per target)."""

    targets: list[str]
    steps: list[Step] = field(default_factory=list)
    batch: dict[str, list[Step]] | None = None


def plan_command(
    req: CommandRequest, devices: Mapping[str, PlanDevice], limits: CommandsConfig
) -> Plan:
    """Check a command against the devices and limits and return its plan (or RequestError)."""
    return _Planner(devices, limits).plan(req)


class _Planner:
    def __init__(self, devices: Mapping[str, PlanDevice], limits: CommandsConfig) -> None:
        self.devices = devices
        self.limits = limits

    def _device(self, dev_id: str | None, fieldname: str) -> PlanDevice:
        if dev_id is None:
            raise RequestError(
                "INVALID_COMMAND",
                "no device named (command.deviceId or targetClientId '<edge>:<device>')",
                {"field": fieldname},
            )
        dev = self.devices.get(dev_id)
        if dev is None:
            raise RequestError(
                "UNKNOWN_DEVICE",
                f"no device {dev_id!r} on this edge",
                {"field": fieldname, "deviceId": dev_id},
            )
        return dev

    def plan(self, req: CommandRequest) -> Plan:
        """The plan of a command, every part checked before anything runs."""
        if req.command_type == "BATCH":
            targets, batch = self._plan_batch(req)
            return Plan(targets, batch=batch)
        dev = self._device(req.device_id or req.target_device, "command.deviceId")
        if req.command_type == "COMPLEX" and "steps" in req.parameters:
            steps = self._plan_complex(req, dev)
        else:
            steps = resolve_operation(
                dev.id, dev.profile, req.command_code, req.operation_type, req.parameters
            )
        if len(steps) > self.limits.max_steps:
            raise RequestError(
                "INVALID_COMMAND",
                f"{len(steps)} steps is above the limit {self.limits.max_steps}",
                {"field": "command.parameters.steps"},
            )
        targets = list(dict.fromkeys(s.device_id for s in steps if s.kind != "delay")) or [dev.id]
        return Plan(targets, steps=steps)

    def _plan_complex(self, req: CommandRequest, dev: PlanDevice) -> list[Step]:
        raw = req.parameters.get("steps")
        extra = set(req.parameters) - {"steps"}
        if extra:
            raise RequestError(
                "INVALID_PARAMETERS",
                f"unknown parameter {sorted(extra)[0]!r}",
                {"field": f"command.parameters.{sorted(extra)[0]}"},
            )
        if not isinstance(raw, list) or not raw:
            raise RequestError(
                "INVALID_COMMAND",
                "steps must be a non-empty list",
                {"field": "command.parameters.steps"},
            )
        if len(raw) > self.limits.max_steps:
            raise RequestError(
                "INVALID_COMMAND",
                f"{len(raw)} steps is above the limit {self.limits.max_steps}",
                {"field": "command.parameters.steps"},
            )
        steps: list[Step] = []
        for i, item in enumerate(raw):
            at = f"command.parameters.steps[{i}]"
            if not isinstance(item, dict):
                raise RequestError("INVALID_COMMAND", "a step must be an object", {"field": at})
            unknown = sorted(set(item) - STEP_KEYS)
            if unknown:  # a misspelt key must not be silently ignored on field hardware
                raise RequestError(
                    "INVALID_COMMAND",
                    f"unknown step key {unknown[0]!r} (expected {', '.join(sorted(STEP_KEYS))})",
                    {"field": f"{at}.{unknown[0]}"},
                )
            cont = item.get("continueOnError", False)
            if not isinstance(cont, bool):
                raise RequestError(
                    "INVALID_COMMAND",
                    "continueOnError must be true or false",
                    {"field": f"{at}.continueOnError"},
                )
            if "delayMs" in item or "delay" in item:
                delay = item.get("delayMs", item.get("delay"))
                if (
                    isinstance(delay, bool)
                    or not isinstance(delay, (int, float))
                    or not (0 <= delay <= 3_600_000)
                ):
                    raise RequestError(
                        "INVALID_COMMAND", "delayMs must be 0-3600000", {"field": f"{at}.delayMs"}
                    )
                steps.append(
                    Step(dev.id, "delay", f"step {i + 1}: delay", delay=float(delay) / 1000.0)
                )
                continue
            step_dev = self._device(item.get("deviceId", dev.id), f"{at}.deviceId")
            op = item.get("operationType")
            code = item.get("commandCode")
            params = item.get("parameters", {})
            if op is not None and (not isinstance(op, str) or op.lower() not in OPERATION_TYPES):
                raise RequestError(
                    "INVALID_COMMAND",
                    "operationType must be read, write or execute",
                    {"field": f"{at}.operationType"},
                )
            if code is not None and not isinstance(code, str):
                raise RequestError(
                    "INVALID_COMMAND",
                    "commandCode must be a string",
                    {"field": f"{at}.commandCode"},
                )
            if not isinstance(params, dict):
                raise RequestError(
                    "INVALID_COMMAND", "parameters must be an object", {"field": f"{at}.parameters"}
                )
            sub = resolve_operation(
                step_dev.id,
                step_dev.profile,
                code,
                op.lower() if op else None,
                params,
                f"{at}.parameters",
                cont,
            )
            for s in sub:
                s.label = f"step {i + 1}: {s.label}"
            steps.extend(sub)
        return steps

    def _plan_batch(self, req: CommandRequest) -> tuple[list[str], dict[str, list[Step]]]:
        params = dict(req.parameters)
        spec = params.pop("targets", None)
        params.pop("batch", None)
        if spec is None:
            spec = req.device_id or req.target_device
        if spec is None:
            raise RequestError(
                "INVALID_COMMAND",
                "a BATCH needs parameters.targets",
                {"field": "command.parameters.targets"},
            )
        ids = list(self.devices)
        types = {d: self.devices[d].config.type for d in ids}
        targets = match_targets(
            spec,
            ids,
            types,
            req.device_type,
            max_items=self.limits.max_batch_targets,
            max_globs=self.limits.max_batch_globs,
        )
        if len(targets) > self.limits.max_batch_targets:
            raise RequestError(
                "INVALID_COMMAND",
                f"{len(targets)} targets is above the limit {self.limits.max_batch_targets}",
                {"field": "command.parameters.targets"},
            )
        plans: dict[str, list[Step]] = {}
        for dev_id in targets:
            dev = self.devices[dev_id]
            try:
                plans[dev_id] = resolve_operation(
                    dev_id, dev.profile, req.command_code, req.operation_type, params
                )
            except RequestError as exc:
                exc.details = {**exc.details, "deviceId": dev_id}
                exc.message = f"{dev_id}: {exc.message}"
                raise
        return targets, plans
