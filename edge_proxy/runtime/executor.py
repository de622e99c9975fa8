"""The executor: runs a command's plan on the devices' link queues, step by step.

It knows nothing of the wire: it turns steps into link jobs, collects their results into a
status, a result and an error, and reports progress through a callback. Timeouts and CANCEL
never interrupt a transaction: :meth:`Executor.abort` marks the command's
:class:`~edge_proxy.drivers.OperationContext` and drops its queued jobs, and a running job stops
at its next checkpoint, so nothing reaches a device after its terminal message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from edge_proxy.core.plan import Plan, Step
from edge_proxy.drivers import Device, OperationContext
from edge_proxy.errors import (
    DeviceException,
    DeviceOffline,
    EdgeProxyError,
    OperationAborted,
    error_body,
)
from edge_proxy.runtime.devices import PRIORITY_LEVELS, DeviceRuntime, Job, LinkRuntime
from edge_proxy.runtime.links import JobFn
from edge_proxy.wire.messages import CommandRequest

log = logging.getLogger(__name__)

# (progress, stage, completed, total, deviceId) of a progress_update not yet sent
ProgressUpdate = tuple[int, str, int, int, str | None]
#: reports progress: (command, completed, total, stage, device id)
Progress = Callable[["CommandState", int, int, str, "str | None"], None]
#: receives the outcome: (command, status, result, error)
Finish = Callable[["CommandState", str, Any, "dict[str, Any] | None"], None]


@dataclass(eq=False)
class CommandState:
    """One accepted command, from ack to terminal message."""

    request: CommandRequest
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


async def read_split(adapter: Device, points: list[str]) -> dict[str, Any]:
    """Read points; if the device refuses the merged read, point by point (protocol.md).

    Returns ``{"values": ...}``, plus ``"errors": {point: error}`` for the refused points;
    raises the device's exception when not one point could be read.
    """
    try:
        return {"values": await adapter.read(points)}
    except DeviceException:
        if len(points) == 1:
            raise
    values: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    first: DeviceException | None = None
    for name in points:
        try:
            values.update(await adapter.read([name]))
        except DeviceException as exc:
            first = first or exc
            errors[name] = error_body(exc)
    if not values and first is not None:
        raise first
    out: dict[str, Any] = {"values": values}
    if errors:
        out["errors"] = errors
    return out


def _operation(step: Step) -> JobFn:
    """The link job of one device step."""

    async def op(adapter: Device) -> Any:
        if step.kind == "read":
            return await read_split(adapter, step.points)
        if step.kind == "write":
            await adapter.write(step.values)
            return {"values": dict(step.values)}
        return {"values": await adapter.execute(step.command or "", step.params)}

    return op


class Executor:
    """Runs plans on the devices' links."""

    def __init__(self, devices: dict[str, DeviceRuntime], progress: Progress) -> None:
        self.devices = devices
        self.progress = progress
        #: told which points a command wrote (telemetry reads them back)
        self.on_written: Callable[[str, list[str]], None] | None = None

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
        job = dev.link.submit(dev, level, _operation(step), cs.ctx)
        cs.jobs.add(job)
        try:
            out = await job.future
        finally:
            cs.jobs.discard(job)
        if step.kind == "write" and self.on_written is not None:
            self.on_written(dev.id, list(step.values))
        return out

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
        errors: dict[str, Any] = {}
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
                entry["status"] = "partial" if out and out.get("errors") else "completed"
                if entry["status"] == "partial":
                    status = "partial"
                    errors.update(out["errors"])
                if out is not None:
                    entry["result"] = out
                    values.update(out.get("values") or {})
                results.append(entry)
            if report:
                self.progress(cs, i + 1, len(steps), step.label, step.device_id)
        return status, results, values, first_error

    def start(self, cs: CommandState, plan: Plan, finish: Finish) -> None:
        """Start a plan; ``finish`` gets its outcome, as :meth:`run` gives it.

        A command of one device step (a SIMPLE read, write or execute) is one link job whose
        completion finishes the command: no task, no extra turn of the event loop. Anything
        else runs :meth:`run` in a task of its own.
        """
        if plan.batch is not None and cs.ctx.reason is None and _BatchChains.fits(self, plan.batch):
            _BatchChains(self, cs, plan.batch, finish).start()
            return
        steps = plan.steps
        if (
            plan.batch is None
            and len(steps) == 1
            and steps[0].kind != "delay"
            and cs.request.command_type != "COMPLEX"
            and cs.ctx.reason is None
        ):
            step = steps[0]
            dev = self.devices[step.device_id]
            if dev.link is not None and dev.state != "disabled":
                level = PRIORITY_LEVELS[cs.request.priority]
                try:
                    job = dev.link.submit(dev, level, _operation(step), cs.ctx)
                except EdgeProxyError:
                    pass  # the task below meets the same refusal and reports it
                else:
                    job.on_done = lambda done: self._single_done(cs, step, done, finish)
                    cs.jobs.add(job)
                    return
        cs.task = asyncio.create_task(
            self.run(cs, plan, finish), name=f"command:{cs.request.request_ref}"
        )

    def job_outcome(
        self, cs: CommandState, step: Step, job: Job
    ) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
        """(status, result, error) of one finished step job; status "aborted" if it was stopped.

        As :meth:`_run_steps` gives them: a read with refused points is ``partial`` with the
        read's ``values`` and ``errors``; a write that went through is told to ``on_written``.
        """
        cs.jobs.discard(job)
        exc = OperationAborted("cancelled") if job.future.cancelled() else job.future.exception()
        if exc is None:
            out = job.future.result()
            if step.kind == "write" and self.on_written is not None:
                self.on_written(step.device_id, list(step.values))
            if out and out.get("errors"):
                return "partial", out, None
            return "completed", {"values": dict((out or {}).get("values") or {})}, None
        if isinstance(exc, OperationAborted):
            return "aborted", None, None
        return "failed", None, error_body(exc)

    def _single_done(self, cs: CommandState, step: Step, job: Job, finish: Finish) -> None:
        """The outcome of a one-step command's job, exactly as :meth:`run` would give it."""
        try:
            status, result, error = self.job_outcome(cs, step, job)
        except Exception as exc:
            log.exception("command crashed", extra={"request_ref": cs.request.request_ref})
            status, result, error = "failed", None, {"code": "INTERNAL_ERROR", "message": str(exc)}
        steps_done: list[dict[str, Any]] = []
        if status == "aborted":
            status = "failed"
        elif status == "failed" and error is not None:
            steps_done.append(
                {
                    "index": 0,
                    "step": step.label,
                    "deviceId": step.device_id,
                    "status": "failed",
                    "error": error,
                }
            )
        reason = cs.ctx.reason
        if reason is not None:
            status, error = self._aborted_status(reason)
            if result is None and steps_done:
                result = {"steps": steps_done}
        finish(cs, status, result, error)

    def waitables(self, cs: CommandState) -> list[asyncio.Future[Any]]:
        """What finishes when ``cs`` does: its task, or its one link job."""
        if cs.task is not None:
            return [cs.task]
        return [job.future for job in cs.jobs]

    async def run(self, cs: CommandState, plan: Plan, finish: Finish) -> None:
        """Run a plan to its end; ``finish`` gets the terminal status, result and error."""
        status = "failed"
        result: Any = None
        error: dict[str, Any] | None = None
        steps_done: list[dict[str, Any]] = []
        try:
            if plan.batch is not None:
                status, result = await self._run_batch(cs, plan.batch)
                if status == "failed":
                    error = self._batch_error(result)
            else:
                multi = len(plan.steps) > 1 or cs.request.command_type == "COMPLEX"
                status, _, values, exc = await self._run_steps(
                    cs, plan.steps, report=multi, results=steps_done
                )
                if multi:
                    result = {"steps": steps_done, "values": values}
                elif status == "completed":
                    result = {"values": values}
                elif status == "partial":  # a read of which some points were refused
                    result = steps_done[0]["result"]
                else:
                    result = None
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
            finish(cs, status, result, error)

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
            done: list[dict[str, Any]] = []
            try:
                status, _, values, exc = await self._run_steps(
                    cs, steps, report=False, results=done
                )
            except OperationAborted:
                return
            entry: dict[str, Any] = {"status": status}
            if status == "completed":
                entry["result"] = {"values": values}
            elif exc is not None:
                entry["error"] = error_body(exc)
            elif status == "partial":  # a read of which some points were refused
                entry["result"] = {"values": values, "errors": _errors(done)}
            results[dev_id] = entry
            self.progress(cs, len(results), total, f"{dev_id}: {status}", dev_id)

        async def run_group(ids: list[str]) -> None:
            # in order within a link: never more than one of our jobs in a link's queue
            for dev_id in ids:
                if cs.ctx.reason is not None:
                    return
                await run_target(dev_id)

        await asyncio.gather(*(run_group(ids) for ids in by_link.values()))
        return batch_outcome(results, total)


def _errors(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The refused points of a target's steps (the ``errors`` of its partial reads)."""
    errors: dict[str, Any] = {}
    for entry in steps:
        errors.update((entry.get("result") or {}).get("errors") or {})
    return errors


def batch_outcome(results: dict[str, dict[str, Any]], total: int) -> tuple[str, dict[str, Any]]:
    """A BATCH's status and result from its targets' entries."""
    ok = sum(1 for r in results.values() if r["status"] == "completed")
    partial = sum(1 for r in results.values() if r["status"] == "partial")
    failed = len(results) - ok - partial
    summary = {"total": total, "succeeded": ok, "failed": failed}
    if partial:  # targets that read some of their points (the rest in their result.errors)
        summary["partial"] = partial
    if len(results) < total:
        summary["notRun"] = total - len(results)
    status = "completed" if ok == total else "failed" if ok + partial == 0 else "partial"
    return status, {"summary": summary, "results": results}


class _BatchChains:
    """A BATCH of one step per target, run without a task: a chain of link jobs per link.

    Each job's completion (in the link worker, see ``Job.on_done``) records its target and
    submits the link's next target, so the worker goes straight on to it; the last chain to end
    finishes the command. Outcomes are those of :meth:`Executor._run_batch`.
    """

    def __init__(
        self, executor: Executor, cs: CommandState, plans: dict[str, list[Step]], finish: Finish
    ) -> None:
        self.executor = executor
        self.cs = cs
        self.finish = finish
        self.total = len(plans)
        self.results: dict[str, dict[str, Any]] = {}
        self.level = PRIORITY_LEVELS[cs.request.priority]
        self.chains: dict[LinkRuntime, Iterator[tuple[str, Step]]] = {}
        by_link: dict[LinkRuntime, list[tuple[str, Step]]] = {}
        for dev_id, steps in plans.items():
            link = executor.devices[dev_id].link
            assert link is not None  # fits() checked
            by_link.setdefault(link, []).append((dev_id, steps[0]))
        self.chains = {link: iter(items) for link, items in by_link.items()}
        self.open = len(self.chains)
        self.ended = False

    @staticmethod
    def fits(executor: Executor, plans: dict[str, list[Step]]) -> bool:
        """Whether every target is one device step on a link (else the task path runs it)."""
        return all(
            len(steps) == 1
            and steps[0].kind != "delay"
            and executor.devices[dev_id].link is not None
            for dev_id, steps in plans.items()
        )

    def start(self) -> None:
        """Submit the first target of every link."""
        for link in list(self.chains):
            self._next(link)

    def _next(self, link: LinkRuntime) -> None:
        cs = self.cs
        for dev_id, step in self.chains[link]:
            if cs.ctx.reason is not None:
                break
            dev = self.executor.devices[dev_id]
            try:
                if dev.state == "disabled":
                    raise DeviceOffline(f"device {dev.id} is disabled")
                job = link.submit(dev, self.level, _operation(step), cs.ctx)
            except EdgeProxyError as exc:
                self._record(dev_id, "failed", None, error_body(exc))
                continue
            job.on_done = lambda done, link=link, dev_id=dev_id, step=step: self._done(
                link, dev_id, step, done
            )
            cs.jobs.add(job)
            return
        self.open -= 1
        if self.open == 0:
            self._end()

    def _done(self, link: LinkRuntime, dev_id: str, step: Step, job: Job) -> None:
        try:
            status, result, error = self.executor.job_outcome(self.cs, step, job)
            if status != "aborted":
                self._record(dev_id, status, result, error)
        except Exception as exc:
            log.exception(
                "batch target crashed", extra={"request_ref": self.cs.request.request_ref}
            )
            self._record(dev_id, "failed", None, {"code": "INTERNAL_ERROR", "message": str(exc)})
        self._next(link)

    def _record(
        self,
        dev_id: str,
        status: str,
        result: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> None:
        entry: dict[str, Any] = {"status": status}
        if result is not None:
            entry["result"] = result
        if error is not None:
            entry["error"] = error
        self.results[dev_id] = entry
        self.executor.progress(
            self.cs, len(self.results), self.total, f"{dev_id}: {status}", dev_id
        )

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        status, result = batch_outcome(self.results, self.total)
        error = Executor._batch_error(result) if status == "failed" else None
        reason = self.cs.ctx.reason
        if reason is not None:
            status, error = Executor._aborted_status(reason)
        self.finish(self.cs, status, result, error)
