"""The Gateway session over a real WebSocket server: REGISTER, heartbeats, reconnects, TLS."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from edge_proxy.config import Config
from edge_proxy.ops.daemon import Daemon
from edge_proxy.ops.logsetup import setup_logging
from tests.builders import base_tree, command, make_config
from tests.integration.faults.parts import poll_until
from tests.integration.support import Gateway, free_port

EdgeFactory = Callable[[Config], Awaitable[Daemon]]


async def test_register_is_first_frame_with_every_device(gateway: Gateway, edge: Daemon) -> None:
    first = gateway.frames[0]
    assert first["type"] == "REGISTER"
    assert first["clientId"] == "edge-001"
    assert first["clientType"] == "EDGE"
    assert first["version"] == "1.0"
    assert first["timestamp"].endswith("Z") and first["messageId"]
    info = first["clientInfo"]
    assert info["name"] == "test edge"
    assert "command" in info["capabilities"] and "cancel" in info["capabilities"]
    ids = {d["deviceId"]: d for d in info["devices"]}
    assert set(ids) == {"pillar-001", "pillar-002", "pillar-slow"}
    assert all(d["deviceType"] == "pillar" for d in ids.values())
    assert all(d["status"] in ("connecting", "online") for d in ids.values())
    assert "counters" in ids["pillar-001"]


async def test_disabled_device_is_registered_as_disabled(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    tree = base_tree(gateway.url)
    tree["devices"].append(
        {
            "id": "pillar-900",
            "type": "pillar",
            "profile": "pillar",
            "link": {"driver": "simulated"},
            "enabled": False,
        }
    )
    await edge_factory(make_config(tree))
    reg = (await gateway.wait(lambda f: f["type"] == "REGISTER"))[0]
    states = {d["deviceId"]: d["status"] for d in reg["clientInfo"]["devices"]}
    assert states["pillar-900"] == "disabled"
    await gateway.send(command("d1", "pillar-900", op="read"))
    term = await gateway.terminal("d1")
    assert term["status"] == "failed"
    assert term["error"]["code"] == "DEVICE_OFFLINE"


async def test_heartbeats_at_configured_interval(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    tree = base_tree(gateway.url)
    tree["gateway"]["heartbeat_interval"] = "200ms"
    await edge_factory(make_config(tree))
    beats = await gateway.wait(lambda f: f["type"] == "HEARTBEAT", timeout=5, count=3)
    status = beats[0]["status"]
    assert status["devicesTotal"] == 3
    assert set(status) >= {"devicesOnline", "devicesTotal", "inFlight", "outboxDepth"}
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await gateway.wait(lambda f: f["type"] == "HEARTBEAT", timeout=5, count=6)
    # three more intervals cannot take less than three intervals
    assert loop.time() - t0 >= 3 * 0.2 * 0.8


async def test_token_in_header_and_register_and_never_logged(
    gateway: Gateway, edge_factory: EdgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-token-value-42"
    tree = base_tree(gateway.url)
    tree["gateway"]["token"] = secret
    config = make_config(tree)
    import io

    stream = io.StringIO()
    handler = setup_logging("debug", "text", [secret], stream=stream)
    try:
        await edge_factory(config)
        reg = (await gateway.wait(lambda f: f["type"] == "REGISTER"))[0]
        await gateway.send(command("t1", op="read"))
        await gateway.terminal("t1")
    finally:
        logging.getLogger().removeHandler(handler)
    assert gateway.headers[0]["authorization"] == f"Bearer {secret}"
    assert reg["auth"] == {"token": secret}
    text = stream.getvalue()
    assert "REGISTER" in text or "connected" in text  # logging did happen
    assert secret not in text
    assert secret not in repr(config)


async def test_restart_reregisters_and_delivers_results_in_order(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    await edge_factory(make_config(base_tree(gateway.url)))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    refs = [f"o{i}" for i in range(5)]
    for ref in refs:  # the slow link runs them one after another, 300 ms each
        await gateway.send(
            command(ref, "pillar-slow", op="write", params={"values": {"mode": int(ref[1:])}})
        )
    await gateway.wait(lambda f: f["type"] == "ack" and f["requestRef"] == refs[-1])
    await gateway.stop()  # the Gateway dies while the results are being produced
    await asyncio.sleep(0)
    await gateway.start()
    regs = await gateway.wait(lambda f: f["type"] == "REGISTER", timeout=10, count=2)
    assert len(regs) == 2
    terminals = await gateway.wait(
        lambda f: f["type"] == "command_response" and f["requestRef"] in refs,
        timeout=10,
        count=5,
    )
    assert [t["requestRef"] for t in terminals] == refs
    assert all(t["status"] == "completed" for t in terminals)
    second = [i for i, c in enumerate(gateway.frame_conn) if c == 2]
    # on the new connection, REGISTER comes first
    assert gateway.frames[second[0]]["type"] == "REGISTER"
    # each result exactly once overall
    for ref in refs:
        assert sum(1 for f in gateway.of(ref) if f["type"] == "command_response") == 1


async def test_reconnects_after_refused_connections(edge_factory: EdgeFactory) -> None:
    port = free_port()
    daemon = await edge_factory(make_config(base_tree(f"ws://127.0.0.1:{port}")))
    await poll_until(lambda: daemon.session.failures >= 2, 4, "two refused connections")
    assert "Error" in (daemon.session.last_error or "")
    gw = Gateway()
    gw.port = port
    await gw.start()
    try:
        await gw.wait(lambda f: f["type"] == "REGISTER", timeout=5)
    finally:
        await gw.stop()


async def test_rejected_handshake_and_rejected_registration_back_off(
    edge_factory: EdgeFactory,
) -> None:
    gw = Gateway()
    attempts = 0

    def reject(conn: ServerConnection, request: Request) -> Response | None:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            return conn.respond(HTTPStatus.FORBIDDEN, "no\n")
        return None

    await gw.start(process_request=reject)

    async def reject_register(ws: ServerConnection) -> None:
        if gw.connections == 1:
            await ws.send('{"type": "error", "code": "AUTH_FAILED", "message": "bad token"}')

    gw.on_connect = reject_register
    try:
        daemon = await edge_factory(make_config(base_tree(gw.url)))
        await gw.wait(lambda f: f["type"] == "REGISTER", timeout=10, count=2)
        assert attempts >= 4  # two refused handshakes, a rejected REGISTER, then success
        assert daemon.session.failures >= 3
        await gw.send(command("after", op="read", params={"points": ["mode"]}))
        assert (await gw.terminal("after"))["status"] == "completed"
    finally:
        await gw.stop()


async def test_stop_closes_with_1001(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    daemon = await edge_factory(make_config(base_tree(gateway.url)))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    await daemon.stop(grace=1.0)
    async with gateway._cond:
        await asyncio.wait_for(gateway._cond.wait_for(lambda: bool(gateway.close_codes)), 5)
    assert gateway.close_codes == [1001]


async def test_outbox_overflow_while_gateway_down(edge_factory: EdgeFactory) -> None:
    tree = base_tree(f"ws://127.0.0.1:{free_port()}")
    tree["gateway"]["outbox"] = {"max_messages": 3}
    tree["telemetry"] = {"buffer": "queue"}  # every message queued while the Gateway is down
    tree["profiles"]["pillar"]["telemetry"] = [
        {"interval": "20ms", "points": ["mode"], "report": "always"}
    ]
    daemon = await edge_factory(make_config(tree))
    await poll_until(
        lambda: daemon.outbox.dropped.get("telemetry", 0) >= 3, 6, "three telemetry dropped"
    )
    assert daemon.outbox.count <= 3


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def _tls_gateway(ca: trustme.CA) -> Gateway:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    gw = Gateway()
    await gw.start(ssl=server_ctx)
    return gw


def _tls_tree(gw: Gateway, tls: dict[str, Any] | None) -> dict[str, Any]:
    tree = base_tree(f"wss://127.0.0.1:{gw.port}")
    if tls is not None:
        tree["gateway"]["tls"] = tls
    return tree


async def test_wss_with_trusted_ca(
    ca: trustme.CA, tmp_path: Path, edge_factory: EdgeFactory
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    gw = await _tls_gateway(ca)
    try:
        await edge_factory(make_config(_tls_tree(gw, {"ca_file": str(ca_file)})))
        await gw.wait(lambda f: f["type"] == "REGISTER", timeout=5)
        await gw.send(command("tls1", op="read", params={"points": ["mode"]}))
        assert (await gw.terminal("tls1"))["status"] == "completed"
    finally:
        await gw.stop()


async def test_wss_untrusted_certificate_is_refused(
    ca: trustme.CA, edge_factory: EdgeFactory
) -> None:
    gw = await _tls_gateway(ca)
    try:
        daemon = await edge_factory(make_config(_tls_tree(gw, None)))
        await poll_until(lambda: daemon.session.failures >= 2, 5, "two refused handshakes")
        assert "CERTIFICATE_VERIFY_FAILED" in (daemon.session.last_error or "")
        assert not gw.frames
    finally:
        await gw.stop()


async def test_wss_client_certificate(
    ca: trustme.CA, tmp_path: Path, edge_factory: EdgeFactory
) -> None:
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "edge.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("edge-001")
    client.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    gw = Gateway()
    await gw.start(ssl=server_ctx)
    try:
        await edge_factory(
            make_config(_tls_tree(gw, {"ca_file": str(ca_file), "cert_file": str(cert_file)}))
        )
        await gw.wait(lambda f: f["type"] == "REGISTER", timeout=5)
    finally:
        await gw.stop()


@pytest.mark.parametrize(("setting", "offered"), [("none", False), ("deflate", True)])
async def test_compression_is_offered_only_when_configured(
    setting: str, offered: bool, gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    tree = base_tree(gateway.url)
    tree["gateway"]["compression"] = setting
    await edge_factory(make_config(tree))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    extensions = gateway.headers[0].get("sec-websocket-extensions", "")
    assert ("permessage-deflate" in extensions) is offered
    await gateway.send(command("c", op="read", params={"points": ["mode"]}))
    assert (await gateway.terminal("c"))["status"] == "completed"
