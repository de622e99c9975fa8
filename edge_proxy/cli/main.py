"""Command line: ``edge-proxy run | check | gateway | demo``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Coroutine, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from edge_proxy import __version__
from edge_proxy.config import Config, ConfigError, load_config
from edge_proxy.drivers import registry

log = logging.getLogger("edge_proxy")
_T = TypeVar("_T")
EXIT_CONFIG = 2
#: `status`: seconds to wait for the daemon's answer.
STATUS_TIMEOUT = 10.0
#: `call`: seconds waited for the terminal beyond the command's own timeout.
CALL_MARGIN = 5.0


def _load(path: str) -> Config:
    return load_config(path, check_link=registry.check_link, check_profile=registry.check_profile)


def _load_or_report(path: str) -> Config | None:
    """The validated config, or None after printing every error (the caller exits 2)."""
    try:
        return _load(path)
    except ConfigError as exc:
        _print_errors(path, exc)
        return None


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def _print_errors(path: str, exc: ConfigError) -> None:
    print(f"{path}: {len(exc.errors)} configuration error(s):", file=sys.stderr)
    for line in exc.located:
        print(f"  {line}", file=sys.stderr)


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a config; print its links, devices and profiles."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    link_rows = []
    for name, link in config.links.items():
        where = f"{link.host}:{link.port}" if link.host else (link.port or "")
        link_rows.append((name, link.driver, where, f"{link.timeout:g}s"))
    for dev in config.devices:
        if not isinstance(dev.link, str):
            link = dev.link
            where = f"{link.host}:{link.port}" if link.host else (link.port or "")
            link_rows.append((config.link_name_of(dev), link.driver, where, f"{link.timeout:g}s"))
    dev_rows = [
        (d.id, d.type, d.profile, config.link_name_of(d), d.unit, "yes" if d.enabled else "no")
        for d in config.devices
    ]
    prof_rows = [
        (n, len(p.points), ", ".join(p.commands) or "-") for n, p in config.profiles.items()
    ]
    print(f"{args.config}: OK (edge {config.edge.id}, gateway {config.gateway.url})\n")
    print("Links\n" + _table(link_rows, ("name", "driver", "address", "timeout")) + "\n")
    print("Devices\n" + _table(dev_rows, ("id", "type", "profile", "link", "unit", "enabled")))
    print("\nProfiles\n" + _table(prof_rows, ("name", "points", "commands")))
    return 0


def _setup_logging(args: argparse.Namespace, config: Config | None) -> None:
    from edge_proxy.ops.logsetup import setup_logging

    setup_logging(args.log_level, args.log_format, config.secrets() if config else [])


async def reload_daemon(daemon: Any, path: str) -> bool:
    """Re-read the config file and apply it; an invalid file is logged and the old one kept.

    Never raises: a failure is logged, and the daemon runs on with what it has.
    """
    from edge_proxy.ops.daemon import ReloadRefused
    from edge_proxy.ops.logsetup import add_secrets

    log.info("SIGHUP: reloading %s", path)
    try:
        new = _load(path)
    except ConfigError as exc:
        for line in exc.located:
            log.error("reload rejected: %s", line)
        log.error(
            "reload rejected (%d error(s)); the running configuration is kept", len(exc.errors)
        )
        return False
    add_secrets(new.secrets())  # before anything can log the new token
    try:
        await daemon.reload(new)
    except ReloadRefused as exc:
        log.error("reload rejected: %s; the running configuration is kept", exc.message)
        return False
    except Exception:
        log.exception("reload failed")
        return False
    return True


def settle_garbage_collector() -> None:
    """Keep full garbage collections short for a daemon that runs for months.

    Everything built at start-up (config, devices, plans, imported modules) lives as long as the
    process: ``gc.freeze`` takes it out of every later collection, which otherwise walks it all
    on each full pass (measured: 110-150 ms pauses every few seconds under 500 polled devices,
    holding every tick and command). A larger first threshold makes the young collections,
    which find little in a process of short-lived messages, rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def run_daemon(config: Config, path: str | None = None) -> int:
    """Run the daemon until SIGINT/SIGTERM; SIGHUP re-reads ``path``.

    SIGHUPs are taken one at a time: those that come while a reload runs make one more
    reload after it (of the file as it is then). Returns the exit status: 0, or 2 when the
    daemon cannot start (a spool, TLS file or device the config names cannot be set up).
    """
    from edge_proxy.ops.daemon import Daemon, StartupError

    stop = _stop_on_signals()
    loop = asyncio.get_running_loop()
    try:
        daemon = Daemon(config)
    except StartupError as exc:
        log.error("cannot start: %s", exc.message)
        return EXIT_CONFIG
    reloader: asyncio.Task[None] | None = None
    if path is not None:
        wanted = asyncio.Event()

        async def reloads() -> None:
            while True:
                await wanted.wait()
                wanted.clear()
                await reload_daemon(daemon, path)

        reloader = loop.create_task(reloads(), name="reloads")
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, wanted.set)
    log.info(
        "edge-proxy %s starting: edge %s, %d devices, %d links",
        __version__,
        config.edge.id,
        len(daemon.devices),
        len(daemon.links),
    )
    try:
        await daemon.start()
        settle_garbage_collector()
        await stop.wait()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGHUP)
        await daemon.stop()  # waits for a reload under way
        if reloader is not None:
            reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reloader
    return 0


LOOPS = ("auto", "asyncio", "uvloop")


def run_loop(main: Coroutine[Any, Any, int], loop: str = "auto") -> int:
    """Run ``main`` on the chosen event loop: ``uvloop`` (auto: when it is installed) or asyncio's.

    uvloop runs the same code with the loop's own machinery in C: about 7 % less CPU per
    command (benchmarks/README.md). ``--loop uvloop`` without it installed is an error.
    """
    uvloop: Any = None
    if loop != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if loop == "uvloop":
                raise SystemExit(
                    "edge-proxy: --loop uvloop: uvloop is not installed "
                    "(pip install 'edge-proxy[fast]')"
                ) from None
    if uvloop is None:
        log.info("event loop: asyncio")
        return asyncio.run(main)
    log.info("event loop: uvloop %s", uvloop.__version__)
    result: int = uvloop.run(main)
    return result


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    _setup_logging(args, config)
    try:
        return run_loop(run_daemon(config, path=args.config), args.loop)
    except Exception:  # a bug, not the config: say so in the log (secrets redacted)
        log.critical("edge-proxy stopped on an unexpected error", exc_info=True)
        return 1


def cmd_gateway(args: argparse.Namespace) -> int:
    """Run the development Gateway."""
    from edge_proxy.cli.devgateway import DevGateway

    async def main() -> int:
        gw = DevGateway(args.host, args.port, printer=lambda line: print(line, flush=True))
        port = await gw.start()
        print(f"development Gateway listening on ws://{args.host}:{port}", flush=True)
        print("type commands as JSON lines or: [edge:]device CODE key=value ...", flush=True)
        loop = asyncio.get_running_loop()
        stop = _stop_on_signals()
        feeder: asyncio.Task[None] | None = None
        if args.script:
            lines = Path(args.script).read_text(encoding="utf-8").splitlines()  # noqa: ASYNC240
            await gw.wait_for(lambda m: m.get("type") == "REGISTER", timeout=3600)
            for line in lines:
                try:
                    msg = gw.parse_line(line)
                    if msg is not None:
                        await gw.call(msg)
                except (ValueError, ConnectionError, asyncio.TimeoutError) as exc:
                    print(f"!! {exc}", flush=True)
        if not args.no_stdin:
            lines_in: asyncio.Queue[str | None] = asyncio.Queue()

            def read_stdin() -> None:
                for line in sys.stdin:
                    loop.call_soon_threadsafe(lines_in.put_nowait, line)
                loop.call_soon_threadsafe(lines_in.put_nowait, None)

            threading.Thread(target=read_stdin, daemon=True, name="stdin").start()

            async def feed() -> None:
                while (line := await lines_in.get()) is not None:
                    try:
                        msg = gw.parse_line(line)
                        if msg is not None:
                            await gw.send(msg)
                    except (ValueError, ConnectionError) as exc:
                        print(f"!! {exc}", flush=True)

            feeder = asyncio.create_task(feed())
        await stop.wait()
        if feeder is not None:
            feeder.cancel()
        await gw.stop()
        return 0

    return asyncio.run(main())


def default_example() -> Path:
    """``config.example.yaml`` of the current directory, else the copy inside the package."""
    local = Path("config.example.yaml")
    if local.is_file():
        return local
    return Path(str(resources.files("edge_proxy").joinpath("config.example.yaml")))


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a Gateway and an edge in one process and show a short command exchange."""
    from edge_proxy.cli.demo import run_demo

    path = args.config or str(default_example())
    config = _load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    _setup_logging(args, config)
    return asyncio.run(run_demo(config, print))


def cmd_simulate(args: argparse.Namespace) -> int:
    """Serve the config's devices through their drivers' simulators on this machine."""
    from edge_proxy.cli.simulate import Simulator

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    _setup_logging(args, config)

    async def main() -> int:
        sim = Simulator(config, args.host, args.base_port, relocate=args.relocate)
        await sim.start()
        if not sim.served:
            print("no enabled device has a simulator to serve it", file=sys.stderr)
            return 1
        print(_table(sim.table(), ("device", "configured", "served as", "address")), flush=True)
        if args.write_config:
            import yaml

            tree = sim.rewrite().model_dump(mode="json", exclude_none=True, by_alias=True)
            if config.gateway.token is not None:
                tree["gateway"]["token"] = "${EDGE_TOKEN:-}"
            Path(args.write_config).write_text(yaml.safe_dump(tree, sort_keys=False))  # noqa: ASYNC240
            print(f"config pointing at the simulators written to {args.write_config}", flush=True)
        await _stop_on_signals().wait()
        await sim.stop()
        return 0

    return asyncio.run(main())


def cmd_probe(args: argparse.Namespace) -> int:
    """Connect to one device, read every readable point once, print a table."""
    from edge_proxy.cli.probe import probe

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    _setup_logging(args, config)
    return asyncio.run(probe(config, args.device, print))


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the config file's JSON Schema (or the reference page with --markdown)."""
    from edge_proxy.config.schema import BUILTIN_DRIVERS, build_markdown, build_schema

    drivers = BUILTIN_DRIVERS if args.builtin_only else registry.names()
    if args.markdown:
        print(build_markdown(BUILTIN_DRIVERS), end="")
    else:
        print(json.dumps(build_schema(drivers), indent=2))
    return 0


def _socket_path(args: argparse.Namespace) -> str | None:
    if args.socket:
        return str(args.socket)
    if not args.config:
        print("give --config FILE (the daemon's config) or --socket PATH", file=sys.stderr)
        return None
    try:
        return _load(args.config).control_socket()
    except ConfigError as exc:
        _print_errors(args.config, exc)
        return None


def cmd_status(args: argparse.Namespace) -> int:
    """Show the running daemon's Gateway link, outbox and devices."""
    from edge_proxy.ops.control import request

    path = _socket_path(args)
    if path is None:
        return EXIT_CONFIG
    if args.watch:
        from edge_proxy.cli.watch import watch

        return watch(path, args.interval, args.count, args.timeout)

    async def main() -> dict[str, Any]:
        async for doc in request(path, {"op": "status"}):
            return doc
        raise ConnectionError("it closed the connection without an answer")

    report = _ask(path, main(), args.timeout)
    if report is None:
        return 1
    if "error" in report and "edge" not in report:
        print(f"!! {report['error']}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    gw = report["gateway"]
    box = report["outbox"]
    print(
        f"edge {report['edge']}  gateway {gw['url']}: {gw['state']} "
        f"(connects {gw['connects']}, failures {gw['failures']})"
    )
    if gw.get("lastError"):
        print(f"  last gateway error: {gw['lastError']}")
    dropped = sum(box["dropped"].values())
    print(
        f"outbox {box['messages']} message(s), {box['bytes']} bytes, {dropped} dropped; "
        f"{report['inFlight']} command(s) in flight\n"
    )
    rows = []
    now = time.time()
    for dev in report["devices"]:
        err = dev.get("lastError") or {}
        rows.append(
            (
                dev["deviceId"],
                dev["status"],
                dev.get("link"),
                dev.get("lastSeen"),
                *telemetry_cells(dev.get("telemetry"), now),
                f"{err.get('code')}: {err.get('message')}" if err else None,
            )
        )
    header = ("device", "state", "link", "last seen", "last sample", "overruns", "last error")
    print(_table(rows, header))
    return 0


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def telemetry_cells(groups: object, now: float) -> tuple[str | None, int | None]:
    """`status`: a device's last sample age ("2.1s" ago, "never") and its skipped ticks.

    ``groups`` is the device's ``telemetry`` list of the status report; (None, None) without.
    """
    if not isinstance(groups, list) or not groups:
        return None, None
    skipped = sum(int(g.get("skipped") or 0) for g in groups if isinstance(g, dict))
    stamps = []
    for group in groups:
        sample = group.get("lastSample") if isinstance(group, dict) else None
        if isinstance(sample, str):
            with contextlib.suppress(ValueError):
                stamps.append(datetime.fromisoformat(sample.replace("Z", "+00:00")).timestamp())
    return (_age(now - max(stamps)) if stamps else "never"), skipped


def cmd_call(args: argparse.Namespace) -> int:
    """Run one command on the running daemon, as the Gateway would."""
    from edge_proxy.cli.devgateway import shorthand, summarize
    from edge_proxy.ops.control import request

    path = _socket_path(args)
    if path is None:
        return EXIT_CONFIG
    try:
        op, code, params = shorthand(args.code, args.params)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    command: dict[str, Any] = {
        "commandType": "SIMPLE",
        "deviceId": args.device,
        "parameters": params,
    }
    if code:
        command["commandCode"] = code
    if op:
        command["operationType"] = op
    frame = {
        "type": "COMMAND",
        "targetClientId": f"{args.edge or '*'}:{args.device}",
        "command": command,
        "timeout": int(args.timeout * 1000),
        "priority": args.priority,
        "version": "1.0",
    }

    async def main() -> int:
        if args.edge is None:
            async for doc in request(path, {"op": "status"}):
                frame["targetClientId"] = f"{doc.get('edge', '*')}:{args.device}"
        status = 1
        async for msg in request(path, {"op": "call", "frame": frame}):
            if "error" in msg and "type" not in msg:
                print(f"!! {msg['error']}", file=sys.stderr)
                return 1
            print(json.dumps(msg) if args.json else summarize(msg), flush=True)
            if msg.get("type") == "command_response" and msg.get("status") == "completed":
                status = 0
        return status

    status = _ask(path, main(), args.timeout + CALL_MARGIN)
    return 1 if status is None else status


def _ask(path: str, client: Coroutine[Any, Any, _T], timeout: float) -> _T | None:
    """Run a control socket client for at most ``timeout`` seconds; None after printing why not."""

    async def bounded() -> _T:
        return await asyncio.wait_for(client, timeout)

    try:
        return asyncio.run(bounded())
    except (asyncio.TimeoutError, TimeoutError):
        print(
            f"edge-proxy at {path} did not answer within {timeout:g}s "
            "(is it stopped, stuck or overloaded?)",
            file=sys.stderr,
        )
    except (OSError, ConnectionError) as exc:
        print(f"cannot reach edge-proxy at {path}: {exc} (is it running?)", file=sys.stderr)
    except ValueError as exc:  # a line that is not JSON: not an edge-proxy, or a broken one
        print(f"edge-proxy at {path} sent an answer that is not JSON: {exc}", file=sys.stderr)
    return None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``edge-proxy``."""
    parser = argparse.ArgumentParser(
        prog="edge-proxy",
        description="Edge daemon between a Subway-protocol Gateway and field devices.",
    )
    parser.add_argument("--version", action="version", version=f"edge-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def logging_opts(p: argparse.ArgumentParser, level: str = "info") -> None:
        p.add_argument("--log-level", default=level, choices=["debug", "info", "warning", "error"])
        p.add_argument("--log-format", default="text", choices=["text", "json"])

    p_run = sub.add_parser("run", help="run the daemon")
    p_run.add_argument("--config", "-c", required=True, help="YAML config file")
    p_run.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="event loop: uvloop when installed (auto, the default; pip install "
        "'edge-proxy[fast]'), or always asyncio's own",
    )
    logging_opts(p_run)
    p_run.set_defaults(func=cmd_run)

    p_check = sub.add_parser("check", help="validate a config file and print what it defines")
    p_check.add_argument("--config", "-c", required=True)
    p_check.set_defaults(func=cmd_check)

    p_gw = sub.add_parser("gateway", help="a local development Gateway")
    p_gw.add_argument("--host", default="127.0.0.1")
    p_gw.add_argument("--port", type=int, default=18081)
    p_gw.add_argument(
        "--script", help="a file of commands (JSON lines) sent once an edge registers"
    )
    p_gw.add_argument("--no-stdin", action="store_true", help="do not read commands from stdin")
    p_gw.set_defaults(func=cmd_gateway)

    p_sim = sub.add_parser(
        "simulate", help="serve the config's devices on their own addresses on this machine"
    )
    p_sim.add_argument("--config", "-c", required=True)
    p_sim.add_argument(
        "--host", default="127.0.0.1", help="where devices not served on their own address listen"
    )
    p_sim.add_argument(
        "--base-port",
        type=int,
        default=0,
        help="first TCP port for those devices (default: any free port)",
    )
    p_sim.add_argument(
        "--relocate",
        action="store_true",
        help="serve every device on a free port or a new pty, not on its configured address",
    )
    p_sim.add_argument(
        "--write-config",
        metavar="FILE",
        help="write a copy of the config that points at the simulators",
    )
    logging_opts(p_sim, "warning")
    p_sim.set_defaults(func=cmd_simulate)

    p_probe = sub.add_parser("probe", help="read every readable point of one device once")
    p_probe.add_argument("--config", "-c", required=True)
    p_probe.add_argument("device", help="device id")
    logging_opts(p_probe, "warning")
    p_probe.set_defaults(func=cmd_probe)

    p_status = sub.add_parser("status", help="show the running daemon's state")
    p_status.add_argument("--config", "-c", help="the daemon's config (to find its socket)")
    p_status.add_argument("--socket", help="the control socket path")
    p_status.add_argument("--json", action="store_true", help="print the raw report")
    p_status.add_argument(
        "--watch", action="store_true", help="redraw the overview and devices table live"
    )
    p_status.add_argument(
        "--interval", type=float, default=1.0, help="--watch: seconds between redraws"
    )
    p_status.add_argument(
        "--count", type=int, default=0, help="--watch: stop after this many redraws (0: never)"
    )
    p_status.add_argument(
        "--timeout",
        type=float,
        default=STATUS_TIMEOUT,
        help=f"seconds to wait for the daemon's answer (default {STATUS_TIMEOUT:g})",
    )
    p_status.set_defaults(func=cmd_status)

    p_call = sub.add_parser("call", help="run a command on the running daemon")
    p_call.add_argument("--config", "-c", help="the daemon's config (to find its socket)")
    p_call.add_argument("--socket", help="the control socket path")
    p_call.add_argument("--edge", help=argparse.SUPPRESS)
    p_call.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds the command may take (default 5); its answer is awaited that long "
        f"plus {CALL_MARGIN:g}s, then the call gives up",
    )
    p_call.add_argument("--priority", default="high", choices=["low", "normal", "high", "urgent"])
    p_call.add_argument("--json", action="store_true", help="print raw messages")
    p_call.add_argument("device", help="device id")
    p_call.add_argument("code", help="a profile command, or read / write")
    p_call.add_argument("params", nargs="*", help="key=value (read: points=a,b)")
    p_call.set_defaults(func=cmd_call)

    p_schema = sub.add_parser("schema", help="print the config file's JSON Schema")
    p_schema.add_argument(
        "--markdown", action="store_true", help="print the reference page (docs/config.md) instead"
    )
    p_schema.add_argument(
        "--builtin-only",
        action="store_true",
        help="list only the built-in drivers (default: every installed one)",
    )
    p_schema.set_defaults(func=cmd_schema)

    p_demo = sub.add_parser("demo", help="Gateway + edge on simulated devices, in one process")
    p_demo.add_argument("--config", "-c", help="default: config.example.yaml")
    logging_opts(p_demo, "warning")
    p_demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-proxy`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-proxy check ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
