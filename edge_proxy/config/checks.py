"""Cross-references between sections, checked once every section has its own shape right.

Unique device ids, known profiles, links and drivers, points that commands and telemetry use,
parameters that templates name, line terminators, Modbus units that clash on one physical
bus, and the files the config names (TLS certificates and keys). Every problem is one line
``path: problem``.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Iterable
from typing import Any

from edge_proxy.config.devices import DeviceConfig
from edge_proxy.config.links import LinkConfig
from edge_proxy.config.model import Config
from edge_proxy.config.profiles import CommandConfig, LineConfig, ProfileConfig, template_fields

#: A driver's check of its own link keys: (driver name, link) -> error suffixes ``.key: problem``.
DriverChecker = Callable[[str, LinkConfig], list[str]]
#: A driver's check of a profile it is to serve: (driver name, profile) -> error suffixes.
ProfileChecker = Callable[[str, ProfileConfig], list[str]]


def raw_references(tree: dict[Any, Any]) -> list[str]:
    """Name references of a tree that failed validation: ids, profiles, links."""
    errors: list[str] = []
    devices = tree.get("devices")
    raw_profiles, raw_links = tree.get("profiles"), tree.get("links")
    profiles: dict[Any, Any] = raw_profiles if isinstance(raw_profiles, dict) else {}
    links: dict[Any, Any] = raw_links if isinstance(raw_links, dict) else {}
    if not isinstance(devices, list):
        return errors
    seen: dict[object, int] = {}
    for i, dev in enumerate(devices):
        if not isinstance(dev, dict):
            continue
        at = f"devices[{i}]"
        dev_id = dev.get("id")
        if isinstance(dev_id, str):
            if dev_id in seen:
                errors.append(f"{at}.id: {dev_id!r} is already used by devices[{seen[dev_id]}]")
            seen.setdefault(dev_id, i)
        profile = dev.get("profile")
        if isinstance(profile, str) and profile not in profiles:
            known = ", ".join(sorted(map(str, profiles))) or "none defined"
            errors.append(f"{at}.profile: unknown profile {profile!r} (known: {known})")
        link = dev.get("link")
        if isinstance(link, str) and link not in links:
            known = ", ".join(sorted(map(str, links))) or "none defined"
            errors.append(f"{at}.link: unknown link {link!r} (known: {known})")
    return errors


def _link_identity(config: Config, device: DeviceConfig) -> tuple[object, ...]:
    """What makes two devices share a connection (as Driver.share_key decides it)."""
    link = config.link_of(device)
    if isinstance(link.port, str):
        return ("serial", os.path.realpath(link.port))
    if link.host:
        return (link.driver, link.host, link.port)
    return ("named", config.link_name_of(device))


def cross_check(
    config: Config,
    check_link: DriverChecker | None = None,
    check_profile: ProfileChecker | None = None,
) -> list[str]:
    """Check references between sections; return one line per problem."""
    errors: list[str] = []
    profile_checked: set[tuple[str, str]] = set()
    for pname, profile in config.profiles.items():
        errors += _check_profile(f"profiles.{pname}", profile, config.commands.max_steps)

    seen_ids: dict[str, int] = {}
    units: dict[tuple[object, ...], dict[int, str]] = {}
    port_drivers: dict[str, str] = {}
    for i, dev in enumerate(config.devices):
        at = f"devices[{i}]"
        if dev.id in seen_ids:
            errors.append(f"{at}.id: {dev.id!r} is already used by devices[{seen_ids[dev.id]}]")
        else:
            seen_ids[dev.id] = i
        if dev.profile not in config.profiles:
            known = ", ".join(sorted(config.profiles)) or "none defined"
            errors.append(f"{at}.profile: unknown profile {dev.profile!r} (known: {known})")
        if isinstance(dev.link, str) and dev.link not in config.links:
            known = ", ".join(sorted(config.links)) or "none defined"
            errors.append(f"{at}.link: unknown link {dev.link!r} (known: {known})")
            continue
        link = config.link_of(dev)
        if isinstance(link.port, str) and dev.enabled:
            # one serial port is one connection: two protocols cannot share it
            other = port_drivers.setdefault(link.port, link.driver)
            if other != link.driver:
                errors.append(
                    f"{at}.link: port {link.port} is already used by driver {other!r} "
                    f"(a serial port carries one protocol; got {link.driver!r})"
                )
        if isinstance(dev.link, LinkConfig) and check_link is not None:
            errors += [f"{at}.link{m}" for m in check_link(link.driver, link)]
        pair = (link.driver, dev.profile)
        if (
            check_profile is not None
            and dev.enabled
            and dev.profile in config.profiles
            and pair not in profile_checked
        ):
            profile_checked.add(pair)
            errors += [
                f"profiles.{dev.profile}{m} (for driver {link.driver!r}, used by {at})"
                for m in check_profile(link.driver, config.profiles[dev.profile])
            ]
        if dev.enabled:
            unit = 1 if dev.unit is None else dev.unit
            by_unit = units.setdefault(_link_identity(config, dev), {})
            if unit in by_unit and link.driver.startswith("modbus"):
                errors.append(
                    f"{at}.unit: unit {unit} is already used on this link by {by_unit[unit]!r}"
                )
            by_unit.setdefault(unit, dev.id)
    if check_link is not None:
        for name, link in config.links.items():
            errors += [f"links.{name}{m}" for m in check_link(link.driver, link)]
    errors += _check_serial_ports(config)
    return errors


def _check_serial_ports(config: Config) -> list[str]:
    """Links of enabled devices that name one serial port (also through a symlink: compared by
    ``os.path.realpath``) have the same settings: the port is one connection with one set."""
    errors: list[str] = []
    first: dict[str, tuple[str, LinkConfig]] = {}
    seen: set[str] = set()
    for i, dev in enumerate(config.devices):
        if not dev.enabled or (isinstance(dev.link, str) and dev.link not in config.links):
            continue
        link = config.link_of(dev)
        at = f"links.{dev.link}" if isinstance(dev.link, str) else f"devices[{i}].link"
        if not isinstance(link.port, str) or at in seen:
            continue
        seen.add(at)
        real = os.path.realpath(link.port)
        if real not in first:
            first[real] = (at, link)
            continue
        other_at, other = first[real]
        mine, theirs = link.model_dump(exclude={"port"}), other.model_dump(exclude={"port"})
        if link.port == other.port:
            del mine["driver"], theirs["driver"]  # the driver check above names that one
        diffs = [
            f"{key} {mine.get(key, '(not set)')} here, {theirs.get(key, '(not set)')} there"
            for key in sorted(set(mine) | set(theirs))
            if mine.get(key) != theirs.get(key)
        ]
        if diffs:
            same = f"{other.port} of {other_at}"
            if link.port != other.port:
                same += f" (both are {real})"
            errors.append(
                f"{at}.port: {link.port} is the serial port {same}, with other settings "
                f"({'; '.join(diffs)}); one port is one connection with one set of settings: "
                f"make them the same or use one link"
            )
    return errors


def _check_points_used(
    at: str, names: Iterable[str], profile: ProfileConfig, *, write: bool
) -> list[str]:
    errors = []
    for name in names:
        point = profile.points.get(name)
        if point is None:
            errors.append(f"{at}: point {name!r} is not declared in the profile's points")
        elif write and not point.writable:
            errors.append(f"{at}: point {name!r} is not writable (access: {point.access})")
        elif not write and not point.readable:
            errors.append(f"{at}: point {name!r} is write-only (access: {point.access})")
    return errors


def _check_profile(at: str, profile: ProfileConfig, max_steps: int) -> list[str]:
    errors: list[str] = []
    for cname, cmd in profile.commands.items():
        cat = f"{at}.commands.{cname}"
        errors += _check_templates(cat, cmd, profile)
        if cmd.write is not None:
            errors += _check_points_used(f"{cat}.write", cmd.write, profile, write=True)
        if cmd.read is not None:
            errors += _check_points_used(f"{cat}.read", cmd.read, profile, write=False)
        if cmd.request is not None and profile.line is None:
            errors.append(f"{cat}.request: the profile needs a line: section for requests")
        if cmd.steps is not None and len(cmd.steps) > max_steps:
            errors.append(f"{cat}.steps: {len(cmd.steps)} steps is above max_steps {max_steps}")
        for j, step in enumerate(cmd.steps or ()):
            sat = f"{cat}.steps[{j}]"
            if step.write is not None:
                errors += _check_points_used(f"{sat}.write", step.write, profile, write=True)
            if step.read is not None:
                errors += _check_points_used(f"{sat}.read", step.read, profile, write=False)
            if step.command is not None:
                target = profile.commands.get(step.command)
                if target is None:
                    errors.append(f"{sat}.command: unknown command {step.command!r}")
                elif target.steps is not None:
                    errors.append(f"{sat}.command: {step.command!r} has steps itself (no nesting)")
                else:
                    # the step runs with this command's parameters: its templates must find them
                    for pname in sorted(target.bound_params() - set(cmd.params)):
                        errors.append(
                            f"{sat}.command: {step.command} needs parameter {{{pname}}}, "
                            f"which {cname}'s params do not declare"
                        )
    errors += _check_telemetry(f"{at}.telemetry", profile)
    if profile.line is not None:
        errors += _check_terminator(f"{at}.line.terminator", profile.line)
    return errors


def _check_telemetry(at: str, profile: ProfileConfig) -> list[str]:
    """Each poll group reads known, readable points, or runs a command that writes nothing."""
    errors: list[str] = []
    names: dict[str, int] = {}
    for i, group in enumerate(profile.telemetry):
        gat = f"{at}[{i}]"
        if group.name in names:
            errors.append(
                f"{gat}.name: group {group.name!r} is already used by {at}[{names[group.name]}]"
            )
        names.setdefault(group.name, i)
        if group.points == "*" and not group.point_names(profile):
            errors.append(f'{gat}.points: "*" finds no readable point in the profile')
        elif isinstance(group.points, list):
            seen: set[str] = set()
            for j, name in enumerate(group.points):
                errors += _check_points_used(f"{gat}.points[{j}]", [name], profile, write=False)
                if name in seen:
                    errors.append(f"{gat}.points[{j}]: point {name!r} is listed twice")
                seen.add(name)
        if group.command is not None:
            errors += _check_poll_command(f"{gat}.command", group.command, profile)
    return errors


def _check_poll_command(at: str, name: str, profile: ProfileConfig) -> list[str]:
    """A group's command exists, writes nothing and needs no parameter a poll cannot give."""
    cmd = profile.commands.get(name)
    if cmd is None:
        known = ", ".join(sorted(profile.commands)) or "none defined"
        return [f"{at}: unknown command {name!r} (known: {known})"]
    writer = _writing_part(name, profile, set())
    if writer is not None:
        return [f"{at}: command {name!r} writes ({writer}): a poll must only read"]
    needed = [p for p, spec in cmd.params.items() if spec.required and spec.default is None]
    if needed:
        return [f"{at}: command {name!r} needs parameter {needed[0]!r}, which a poll cannot give"]
    return []


def _writing_part(name: str, profile: ProfileConfig, seen: set[str]) -> str | None:
    """Where command ``name`` writes (``write``, ``steps[1].write``, ...), or None if it does not.

    A ``request:`` (line protocol) is not a write: what it does is the device's business.
    """
    cmd = profile.commands.get(name)
    if cmd is None or name in seen:
        return None
    seen.add(name)
    if cmd.write:
        return "write"
    for j, step in enumerate(cmd.steps or ()):
        if step.write:
            return f"steps[{j}].write"
        if step.command is not None:
            inner = _writing_part(step.command, profile, seen)
            if inner is not None:
                return f"steps[{j}].command {step.command}: {inner}"
    return None


def _check_templates(at: str, cmd: CommandConfig, profile: ProfileConfig) -> list[str]:
    """Each template of a command parses and names declared parameters only."""
    errors: list[str] = []
    for where, template in cmd.templates():
        try:
            names = template_fields(template)
        except ValueError as exc:
            errors.append(f"{at}.{where}: not a valid template: {exc} (got {template!r})")
            continue
        for pname in sorted(names - set(cmd.params)):
            errors.append(
                f"{at}.{where}: refers to parameter {{{pname}}} that params does not declare"
            )
        if where == "request" and profile.line is not None:
            literal = "".join(text for text, _, _, _ in string.Formatter().parse(template))
            if profile.line.terminator in literal:
                errors.append(
                    f"{at}.{where}: contains the line terminator "
                    f"{profile.line.terminator!r}: it would be sent as two lines"
                )
    return errors


def _check_terminator(at: str, line: LineConfig) -> list[str]:
    """The terminator can be written in the line's encoding and found again in a line."""
    try:
        encoded = line.terminator.encode(line.encoding)
    except UnicodeEncodeError:
        return [f"{at}: {line.terminator!r} cannot be encoded in {line.encoding}"]
    # an encoding with a byte-order mark (utf-16, utf-32) writes it before every string:
    # the terminator's bytes then never appear at the end of an encoded line
    if not ("x" + line.terminator).encode(line.encoding).endswith(encoded):
        return [
            f"{at}: {line.terminator!r} in {line.encoding} is not the same bytes at the end "
            f"of a line (a byte-order mark?); use an encoding without one, e.g. utf-16-le"
        ]
    return []


#: The keys of ``gateway.tls`` that name files edge-proxy reads at start.
TLS_FILES = ("ca_file", "cert_file", "key_file")


def check_files(config: Config) -> list[str]:
    """Files the config names exist and can be read (relative paths: the working directory)."""
    errors: list[str] = []
    tls = config.gateway.tls
    for key in TLS_FILES if tls is not None else ():
        name = getattr(tls, key)
        if not name:
            continue
        problem = _unreadable(name)
        if problem:
            where = "" if os.path.isabs(name) else f" (relative to {os.getcwd()})"
            errors.append(f"gateway.tls.{key}: {name}{where} {problem}")
    return errors


def _unreadable(path: str) -> str | None:
    """Why ``path`` cannot be read as a file, or None when it can."""
    if not os.path.exists(path):
        return "does not exist"
    if os.path.isdir(path):
        return "is a directory, not a file"
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None
