"""Logging: secrets redacted, JSON lines with context, outages logged without flooding."""

from __future__ import annotations

import io
import json
import logging

import pytest

from edge_proxy.ops.logsetup import setup_logging
from edge_proxy.runtime.outage import OutageLog


def test_json_lines_carry_device_and_ref_and_never_the_secret() -> None:
    stream = io.StringIO()
    handler = setup_logging("info", "json", ["tok-123"], stream=stream)
    try:
        logging.getLogger("edge_proxy.x").info(
            "sending with tok-123", extra={"device_id": "d1", "request_ref": "r1"}
        )
    finally:
        logging.getLogger().removeHandler(handler)
    doc = json.loads(stream.getvalue().splitlines()[-1])
    assert doc["device_id"] == "d1" and doc["request_ref"] == "r1"
    assert doc["msg"] == "sending with ***"
    assert doc["ts"].endswith("Z")


def test_outage_warns_once_then_reminds(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("edge_proxy.test_outage")
    outage = OutageLog(logger, "link x", every=3600)
    with caplog.at_level(logging.DEBUG, logger="edge_proxy.test_outage"):
        for _ in range(50):
            outage.failed("refused")
        outage.recovered()
        outage.failed("refused again")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "link x down: refused",
        "link x down: refused again",
    ]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 49
    assert any("back after 50 failed attempt(s)" in r.getMessage() for r in caplog.records)
    outage.every = 0.0
    with caplog.at_level(logging.DEBUG, logger="edge_proxy.test_outage"):
        outage.failed("still refused")
    assert "2 attempts" in caplog.records[-1].getMessage()
