"""The per-link queue: priority order, first come first served, aging, background work last."""

from __future__ import annotations

import time
from typing import Any

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.drivers import Device, OperationContext
from edge_proxy.runtime.devices import BACKGROUND, PRIORITY_LEVELS, DeviceRuntime, LinkRuntime
from edge_proxy_drivers.simulated import SimulatedDriver, SimulatedLink


async def noop(adapter: Device) -> Any:
    return None


def make_link(aging: float = 2.0) -> tuple[LinkRuntime, DeviceRuntime]:
    cfg = LinkConfig(driver="simulated")
    link = LinkRuntime("l", SimulatedDriver, SimulatedLink("l", cfg), cfg, aging=aging)
    dev = DeviceRuntime(DeviceConfig(id="d", profile="p", link="l"), ProfileConfig(), link, None)
    return link, dev


def submit(link: LinkRuntime, dev: DeviceRuntime, level: int, tag: str) -> None:
    job = link.submit(dev, level, noop, OperationContext(tag))
    job.future.cancel()  # nobody waits for these: only the picking order is tested


def order(link: LinkRuntime) -> list[str | None]:
    out = []
    while (job := link._pick()) is not None:
        out.append(job.ctx.request_ref)
    return out


async def test_priority_then_arrival_and_background_last() -> None:
    link, dev = make_link()
    submit(link, dev, BACKGROUND, "health")
    for tag, prio in [
        ("l1", "low"),
        ("n1", "normal"),
        ("h1", "high"),
        ("n2", "normal"),
        ("u1", "urgent"),
        ("h2", "high"),
    ]:
        submit(link, dev, PRIORITY_LEVELS[prio], tag)
    assert order(link) == ["u1", "h1", "h2", "n1", "n2", "l1", "health"]


async def test_aging_lifts_a_waiting_low_command() -> None:
    link, dev = make_link(aging=0.5)
    submit(link, dev, PRIORITY_LEVELS["low"], "old-low")
    link.queues[PRIORITY_LEVELS["low"]][0].enqueued = time.monotonic() - 2.0  # waited 2 s
    submit(link, dev, PRIORITY_LEVELS["high"], "new-high")
    # 2 s at 0.5 s per level lifts "low" (3) above "high" (1)
    assert order(link) == ["old-low", "new-high"]


async def test_background_never_ahead_of_a_command() -> None:
    link, dev = make_link(aging=0.01)
    submit(link, dev, BACKGROUND, "probe")
    link.queues[BACKGROUND][0].enqueued = time.monotonic() - 3600  # background does not age
    submit(link, dev, PRIORITY_LEVELS["low"], "cmd")
    assert order(link) == ["cmd", "probe"]
