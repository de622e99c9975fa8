"""The command engine: Gateway frames in; ack, progress and exactly one terminal message out.

Every accepted ``requestRef`` gets a :class:`CommandState`. Its task runs the plan built by
:mod:`edge_proxy.operations` on the devices' link queues and always ends in
:meth:`Engine._finish`, which sends the one terminal message and remembers it for
de-duplication. Timeouts and CANCEL never interrupt a transaction: they mark the command's
:class:`~edge_proxy.drivers.OperationContext`, drop its queued jobs, and wait for a running
job to stop at its next checkpoint, so nothing reaches a device after its terminal message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_proxy.config import CommandsConfig
from edge_proxy.core import plan as operations
from edge_proxy.core.plan import Step
from edge_proxy.drivers import Device, OperationContext
from edge_proxy.errors import (
    DeviceOffline,
    OperationAborted,
    RequestError,
    error_body,
)
from edge_proxy.runtime.devices import PRIORITY_LEVELS, DeviceRuntime, Job, LinkRuntime
from edge_proxy.wire import messages as protocol

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
PROGRESS_INTERVAL = 0.1
STEP_KEYS = frozenset(
    {
        "operationType",
        "commandCode",
        "parameters",
        "deviceId",
        "continueOnError",
        "delayMs",
        "delay",
    }
)
LOCAL_PREFIX = "local:"  # commands from the control socket: never spooled
# (progress, stage, completed, total, deviceId) of a progress_update not yet sent
ProgressUpdate = tuple[int, str, int, int, str | None]


@dataclass(eq=False)
class CommandState:
    """One accepted command, from ack to terminal message."""

    request: protocol.CommandRequest
    ctx: OperationContext
    arrived: float
    targets: list[str]
    links: set[LinkRuntime]
    aborted: asyncio.Event = field(default_factory=asyncio.Event)
    jobs: set[Job] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    deadline_handle: asyncio.TimerHandle | None = None
    duplicates: int = 0
    finished: bool = False
    progress_sent: int = -1
    progress_last: float = 0.0
    progress_pending: ProgressUpdate | None = None
    progress_handle: asyncio.TimerHandle | None = None


class Engine:
    """Validates, schedules and answers Gateway commands."""

    def __init__(
        self,
        edge_id: str,
        devices: Mapping[str, DeviceRuntime],
        config: CommandsConfig,
        factory: protocol.MessageFactory,
        emit: Emit,
        max_message_size: int = 1024**2,
    ) -> None:
        self.edge_id = edge_id
        self.devices = dict(devices)
        self.config = config
        self.factory = factory
        self.emit = emit
        self.max_message_size = max_message_size
        self.running: dict[str, CommandState] = {}
        self.finished: collections.OrderedDict[str, tuple[float, dict[str, Any]]] = (
            collections.OrderedDict()
        )
        self.accepting = True
        self.counts: collections.Counter[str] = collections.Counter()
        self.on_terminal: Callable[[str, str, str, float], None] | None = None
        #: the on-disk spool, when configured (edge_proxy.spool.Spool)
        self.journal: Any = None

    # ------------------------------------------------------------------ frames in

    def handle_frame(self, data: str | bytes) -> None:
        """Process one Gateway frame; never raises."""
        msg: protocol.Incoming | None = None
        try:
            msg = protocol.parse_frame(data, self.max_message_size)
            self.counts[f"in:{msg.type}"] += 1
            self._dispatch(msg)
        except RequestError as exc:
            ref = exc.details.pop("requestRef", None) if exc.details else None
            if ref is None and msg is not None:
                ref = msg.request_ref
            self.counts[f"rejected:{exc.code}"] += 1
            log.warning("rejected frame: %s: %s", exc.code, exc.message, extra={"request_ref": ref})
            self.emit(
                self.factory.error(
                    exc.code, exc.message, request_ref=ref, details=exc.details or None
                )
            )
        except Exception as exc:  # a bug must not take the session down
            log.exception("internal error while handling a frame")
            self.emit(self.factory.error("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"))

    def _dispatch(self, msg: protocol.Incoming) -> None:
        if msg.type == "COMMAND":
            self._command(msg)
        elif msg.type == "CANCEL":
            self._cancel(msg)
        elif msg.type == "QUERY":
            self._query(msg)
        elif msg.type == "ERROR":
            log.warning(
                "Gateway error: %s %s",
                msg.body.get("code"),
                msg.body.get("message"),
                extra={"request_ref": msg.request_ref},
            )
        else:
            log.debug("Gateway %s accepted", msg.type)

    def _reject(self, req: protocol.CommandRequest, exc: RequestError) -> None:
        self.counts[f"rejected:{exc.code}"] += 1
        log.info(
            "command rejected: %s: %s",
            exc.code,
            exc.message,
            extra={"request_ref": req.request_ref},
        )
        self.emit(
            self.factory.error(
                exc.code,
                exc.message,
                request_ref=req.request_ref,
                details=exc.details or None,
                callback=req.callback,
                has_callback=req.has_callback,
            )
        )

    def _command(self, msg: protocol.Incoming) -> None:
        req = protocol.parse_command(msg)
        ref = req.request_ref
        if self._duplicate(ref, req):
            return
        try:
            if not self.accepting:
                raise RequestError("OVERLOADED", "the edge is shutting down")
            if req.target_edge != self.edge_id:
                raise RequestError(
                    "WRONG_EDGE",
                    f"targetClientId names edge {req.target_edge!r}; this is {self.edge_id!r}",
                    {"field": "targetClientId"},
                )
            targets, plan = self._plan(req)
            if len(self.running) >= self.config.max_queued:
                raise RequestError(
                    "OVERLOADED", f"{len(self.running)} commands are already in progress"
                )
            links = {d.link for d in (self.devices[t] for t in targets) if d.link is not None}
            for link in links:
                if link.reserved >= link.max_queued:
                    raise RequestError(
                        "OVERLOADED", f"link {link.name} has {link.reserved} commands waiting"
                    )
        except RequestError as exc:
            self._reject(req, exc)
            return
        loop = asyncio.get_running_loop()
        timeout = (req.timeout_ms / 1000.0) if req.timeout_ms else self.config.default_timeout
        ctx = OperationContext(ref, loop.time() + timeout)
        cs = CommandState(req, ctx, time.monotonic(), targets, links)
        for link in links:
            link.reserved += 1
        self.running[ref] = cs
        self.counts[f"accepted:{req.command_type}"] += 1
        if self.journal is not None and not ref.startswith(LOCAL_PREFIX):
            self.journal.accepted(ref, req.callback, req.has_callback)
        self.emit(self.factory.ack(ref, "accepted", targets))
        cs.deadline_handle = loop.call_at(ctx.deadline or 0.0, self.abort, cs, "timeout")
        cs.task = asyncio.create_task(self._run(cs, plan), name=f"command:{ref}")

    def _duplicate(self, ref: str, req: protocol.CommandRequest) -> bool:
        self._expire_dedup()
        cs = self.running.get(ref)
        if cs is not None:
            cs.duplicates += 1
            self.emit(self.factory.ack(ref, "duplicate", cs.targets))
            return True
        done = self.finished.get(ref)
        if done is not None:
            terminal = done[1]
            targets = terminal.get("_targets", [])
            self.emit(self.factory.ack(ref, "duplicate", targets))
            self.emit({k: v for k, v in terminal.items() if k != "_targets"})
            return True
        del req
        return False

    def _expire_dedup(self) -> None:
        horizon = time.monotonic() - self.config.dedup_window
        while self.finished:
            ref, (at, _) = next(iter(self.finished.items()))
            if at >= horizon and len(self.finished) <= self.config.dedup_max:
                break
            del self.finished[ref]

    # ------------------------------------------------------------------ planning

    def _device(self, dev_id: str | None, fieldname: str) -> DeviceRuntime:
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

    def _plan(self, req: protocol.CommandRequest) -> tuple[list[str], Any]:
        if req.command_type == "BATCH":
            return self._plan_batch(req)
        dev = self._device(req.device_id or req.target_device, "command.deviceId")
        if req.command_type == "COMPLEX" and "steps" in req.parameters:
            steps = self._plan_complex(req, dev)
        else:
            steps = operations.resolve_operation(
                dev.id, dev.profile, req.command_code, req.operation_type, req.parameters
            )
        if len(steps) > self.config.max_steps:
            raise RequestError(
                "INVALID_COMMAND",
                f"{len(steps)} steps is above the limit {self.config.max_steps}",
                {"field": "command.parameters.steps"},
            )
        targets = list(dict.fromkeys(s.device_id for s in steps if s.kind != "delay")) or [dev.id]
        return targets, steps

    def _plan_complex(self, req: protocol.CommandRequest, dev: DeviceRuntime) -> list[Step]:
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
        if len(raw) > self.config.max_steps:
            raise RequestError(
                "INVALID_COMMAND",
                f"{len(raw)} steps is above the limit {self.config.max_steps}",
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
            if op is not None and (
                not isinstance(op, str) or op.lower() not in protocol.OPERATION_TYPES
            ):
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
            sub = operations.resolve_operation(
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

    def _plan_batch(self, req: protocol.CommandRequest) -> tuple[list[str], Any]:
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
        targets = operations.match_targets(spec, ids, types, req.device_type)
        if len(targets) > self.config.max_batch_targets:
            raise RequestError(
                "INVALID_COMMAND",
                f"{len(targets)} targets is above the limit {self.config.max_batch_targets}",
                {"field": "command.parameters.targets"},
            )
        plans: dict[str, list[Step]] = {}
        for dev_id in targets:
            dev = self.devices[dev_id]
            try:
                plans[dev_id] = operations.resolve_operation(
                    dev_id, dev.profile, req.command_code, req.operation_type, params
                )
            except RequestError as exc:
                exc.details = {**exc.details, "deviceId": dev_id}
                exc.message = f"{dev_id}: {exc.message}"
                raise
        return targets, plans

    # ------------------------------------------------------------------ running

    def abort(self, cs: CommandState, reason: str) -> None:
        """Stop a command: drop its queued jobs; a running job stops at its next checkpoint."""
        if cs.finished:
            return
        cs.ctx.abort(reason)
        cs.aborted.set()
        for job in list(cs.jobs):
            if job.device.link is not None:
                job.device.link.discard(job)

    async def _run_step(self, cs: CommandState, step: Step) -> Any:
        cs.ctx.check()
        if step.kind == "delay":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(cs.aborted.wait(), step.delay)
            cs.ctx.check()
            return None
        dev = self.devices[step.device_id]
        if dev.link is None or dev.state == "disabled":
            raise DeviceOffline(f"device {dev.id} is disabled")
        level = PRIORITY_LEVELS[cs.request.priority]

        async def op(adapter: Device) -> Any:
            if step.kind == "read":
                return {"values": await adapter.read(step.points)}
            if step.kind == "write":
                await adapter.write(step.values)
                return {"values": dict(step.values)}
            return {"values": await adapter.execute(step.command or "", step.params)}

        job = dev.link.submit(dev, level, op, cs.ctx)
        cs.jobs.add(job)
        try:
            return await job.future
        finally:
            cs.jobs.discard(job)

    async def _run_steps(
        self,
        cs: CommandState,
        steps: list[Step],
        *,
        report: bool,
        results: list[dict[str, Any]] | None = None,
    ) -> tuple[str, list[dict[str, Any]], dict[str, Any], BaseException | None]:
        # ``results`` is filled in place so an aborted run still reports what finished
        results = [] if results is None else results
        values: dict[str, Any] = {}
        status = "completed"
        first_error: BaseException | None = None
        for i, step in enumerate(steps):
            entry: dict[str, Any] = {"index": i, "step": step.label, "deviceId": step.device_id}
            try:
                out = await self._run_step(cs, step)
            except OperationAborted:
                raise
            except Exception as exc:
                entry["status"] = "failed"
                entry["error"] = error_body(exc)
                results.append(entry)
                first_error = first_error or exc
                if not step.continue_on_error:
                    return "failed", results, values, exc
                status = "partial"
            else:
                entry["status"] = "completed"
                if out is not None:
                    entry["result"] = out
                    values.update(out.get("values") or {})
                results.append(entry)
            if report:
                self._progress(cs, i + 1, len(steps), step.label, step.device_id)
        return status, results, values, first_error

    async def _run(self, cs: CommandState, plan: Any) -> None:
        status = "failed"
        result: Any = None
        error: dict[str, Any] | None = None
        steps_done: list[dict[str, Any]] = []
        try:
            if isinstance(plan, dict):
                status, result = await self._run_batch(cs, plan)
                if status == "failed":
                    error = self._batch_error(result)
            else:
                multi = len(plan) > 1 or cs.request.command_type == "COMPLEX"
                status, _, values, exc = await self._run_steps(
                    cs, plan, report=multi, results=steps_done
                )
                if multi:
                    result = {"steps": steps_done, "values": values}
                else:
                    result = {"values": values} if status == "completed" else None
                if status == "failed" and exc is not None:
                    error = error_body(exc)
        except OperationAborted:
            status = "failed"
        except Exception as exc:
            log.exception("command crashed", extra={"request_ref": cs.request.request_ref})
            status, error = "failed", {"code": "INTERNAL_ERROR", "message": str(exc)}
        finally:
            reason = cs.ctx.reason
            # wait for any job still on a wire: its terminal must come after its last frame
            for job in list(cs.jobs):
                with contextlib.suppress(BaseException):
                    await asyncio.shield(job.future)
            if reason is not None:
                status, error = self._aborted_status(reason)
                if result is None and steps_done:
                    result = {"steps": steps_done}
            self._finish(cs, status, result, error)

    @staticmethod
    def _batch_error(result: dict[str, Any]) -> dict[str, Any]:
        """The top-level error of a BATCH whose every target failed."""
        failures = [r["error"] for r in result["results"].values() if "error" in r]
        codes = sorted({f.get("code", "INTERNAL_ERROR") for f in failures})
        first = failures[0] if failures else {"code": "INTERNAL_ERROR", "message": "no target ran"}
        return {
            "code": first["code"] if len(codes) <= 1 else codes[0],
            "message": f"every target failed ({len(failures)}): {first.get('message', '')}",
            "details": {"codes": codes},
        }

    @staticmethod
    def _aborted_status(reason: str) -> tuple[str, dict[str, Any] | None]:
        # the status says it all for timeout and cancelled; no error object
        if reason == "timeout":
            return "timeout", None
        if reason == "cancelled":
            return "cancelled", None
        return "failed", {"code": "INTERNAL_ERROR", "message": reason}

    async def _run_batch(
        self, cs: CommandState, plans: dict[str, list[Step]]
    ) -> tuple[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        total = len(plans)
        by_link: dict[object, list[str]] = {}
        for dev_id in plans:
            by_link.setdefault(self.devices[dev_id].link, []).append(dev_id)

        async def run_target(dev_id: str) -> None:
            steps = plans[dev_id]
            try:
                status, _, values, exc = await self._run_steps(cs, steps, report=False)
            except OperationAborted:
                return
            entry: dict[str, Any] = {"status": status}
            if status == "completed":
                entry["result"] = {"values": values}
            elif exc is not None:
                entry["error"] = error_body(exc)
            results[dev_id] = entry
            self._progress(cs, len(results), total, f"{dev_id}: {status}", dev_id)

        async def run_group(ids: list[str]) -> None:
            # in order within a link: never more than one of our jobs in a link's queue
            for dev_id in ids:
                if cs.ctx.reason is not None:
                    return
                await run_target(dev_id)

        await asyncio.gather(*(run_group(ids) for ids in by_link.values()))
        ok = sum(1 for r in results.values() if r["status"] == "completed")
        failed = len(results) - ok
        summary = {"total": total, "succeeded": ok, "failed": failed}
        if len(results) < total:
            summary["notRun"] = total - len(results)
        status = "completed" if ok == total else ("failed" if ok == 0 else "partial")
        return status, {"summary": summary, "results": results}

    # ------------------------------------------------------------------ progress and finish

    def _progress(
        self, cs: CommandState, completed: int, total: int, stage: str, device_id: str | None
    ) -> None:
        pct = min(100, max(0, (completed * 100) // max(total, 1)))
        if pct < cs.progress_sent or cs.finished:
            return
        # the frame is built only when it is sent: most updates of a big batch are throttled
        update = (pct, stage, completed, total, device_id)
        now = time.monotonic()
        if now - cs.progress_last >= PROGRESS_INTERVAL:
            self._send_progress(cs, update)
        else:
            cs.progress_pending = update
            if cs.progress_handle is None:
                delay = PROGRESS_INTERVAL - (now - cs.progress_last)
                cs.progress_handle = asyncio.get_running_loop().call_later(
                    delay, self._flush_progress, cs
                )

    def _send_progress(self, cs: CommandState, update: ProgressUpdate) -> None:
        if cs.progress_handle is not None:  # a timer left from a held-back update is stale now
            cs.progress_handle.cancel()
            cs.progress_handle = None
        cs.progress_pending = None
        cs.progress_last = time.monotonic()
        cs.progress_sent = update[0]
        self.emit(self.factory.progress(cs.request.request_ref, *update))

    def _flush_progress(self, cs: CommandState) -> None:
        cs.progress_handle = None
        if cs.progress_pending is not None and not cs.finished:
            self._send_progress(cs, cs.progress_pending)

    def _finish(
        self, cs: CommandState, status: str, result: Any, error: dict[str, Any] | None
    ) -> None:
        if cs.finished:
            return
        if cs.progress_handle is not None:
            cs.progress_handle.cancel()
            cs.progress_handle = None
        if cs.progress_pending is not None:
            self._send_progress(cs, cs.progress_pending)
        cs.finished = True
        for link in cs.links:
            link.reserved -= 1
        if cs.deadline_handle is not None:
            cs.deadline_handle.cancel()
        req = cs.request
        elapsed = time.monotonic() - cs.arrived
        msg = self.factory.response(
            req.request_ref,
            status,
            result=result,
            error=error,
            duration_ms=int(elapsed * 1000),
            callback=req.callback,
            has_callback=req.has_callback,
        )
        self.running.pop(req.request_ref, None)
        self.counts[f"terminal:{req.command_type}:{status}"] += 1
        log.info(
            "command %s %s %s in %d ms",
            req.command_type,
            req.command_code or req.operation_type or "",
            status,
            int(elapsed * 1000),
            extra={"request_ref": req.request_ref},
        )
        if self.journal is not None and not req.request_ref.startswith(LOCAL_PREFIX):
            try:
                msg["_spool_id"] = self.journal.terminal(msg, cs.targets)
            except Exception:
                log.exception(
                    "spool: cannot store the terminal message",
                    extra={"request_ref": req.request_ref},
                )
        self.emit(msg)
        msg = {k: v for k, v in msg.items() if k != "_spool_id"}
        for _ in range(cs.duplicates):
            self.emit(msg)
        self.finished[req.request_ref] = (time.monotonic(), {**msg, "_targets": cs.targets})
        self._expire_dedup()
        if self.on_terminal is not None:
            self.on_terminal(req.command_type, status, req.request_ref, elapsed)

    # ------------------------------------------------------------------ CANCEL / QUERY

    def _cancel(self, msg: protocol.Incoming) -> None:
        if msg.request_ref is None:
            raise RequestError(
                "INVALID_COMMAND", "CANCEL needs a requestRef", {"field": "requestRef"}
            )
        cs = self.running.get(msg.request_ref)
        if cs is None:
            log.info(
                "CANCEL of an unknown or finished command ignored",
                extra={"request_ref": msg.request_ref},
            )
            return
        log.info("CANCEL", extra={"request_ref": msg.request_ref})
        self.abort(cs, "cancelled")

    def _query(self, msg: protocol.Incoming) -> None:
        ref = msg.request_ref
        if ref is None:
            raise RequestError(
                "INVALID_COMMAND", "QUERY needs a requestRef", {"field": "requestRef"}
            )
        what = msg.body.get("query")
        if isinstance(what, str):
            what = what.lower()
        if what == "devices":
            result: dict[str, Any] = {"devices": [d.status() for d in self.devices.values()]}
        elif what == "device":
            dev_id = msg.body.get("deviceId")
            if not isinstance(dev_id, str):
                raise RequestError(
                    "INVALID_COMMAND",
                    "query 'device' needs deviceId",
                    {"field": "deviceId"},
                )
            dev = self.devices.get(dev_id)
            if dev is None:
                raise RequestError(
                    "UNKNOWN_DEVICE", f"no device {dev_id!r} on this edge", {"field": "deviceId"}
                )
            info = dev.status()
            info["points"] = {
                name: {k: v for k, v in p.model_dump().items() if v is not None}
                for name, p in dev.profile.points.items()
            }
            info["commands"] = sorted(dev.profile.commands)
            result = {"device": info}
        else:
            raise RequestError(
                "INVALID_COMMAND", "query must be 'devices' or 'device'", {"field": "query"}
            )
        self.emit(self.factory.response(ref, "completed", result=result, duration_ms=0))

    # ------------------------------------------------------------------ shutdown and status

    def in_flight(self) -> int:
        """Commands accepted and not yet answered."""
        return len(self.running)

    async def drain(self, grace: float) -> None:
        """Stop accepting; wait up to ``grace`` for running commands, then fail the rest."""
        self.accepting = False
        tasks = [cs.task for cs in self.running.values() if cs.task is not None]
        if tasks:
            log.info("waiting up to %.1fs for %d command(s)", grace, len(tasks))
            await asyncio.wait(tasks, timeout=grace)
        for cs in list(self.running.values()):
            self.abort(cs, "edge shutting down")
        rest = [cs.task for cs in self.running.values() if cs.task is not None]
        if rest:
            await asyncio.wait(rest, timeout=max(1.0, grace))
