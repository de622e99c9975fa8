"""The driver API package: the simulation helpers' pure rules.

What importing it costs is measured in fresh interpreters, in
``tests/integration/test_driver_api_imports.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_proxy.drivers import Driver, SerialAddress, TcpAddress
from edge_proxy.drivers.simulation import claim_serial_path, is_loopback, release_serial_path


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("192.168.10.5", False),
        ("plc.example.com", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, local: bool) -> None:
    assert is_loopback(host) is local


def test_claim_serial_path_takes_only_what_hides_nothing(tmp_path: Path) -> None:
    target = str(tmp_path / "pts-stand-in")
    Path(target).write_text("")
    missing = tmp_path / "ttyUSB0"
    claim_serial_path(str(missing), target)
    assert os.readlink(missing) == target

    with pytest.raises(FileExistsError):  # a live symlink (now ours) is not taken again
        claim_serial_path(str(missing), "/dev/pts/999")
    release_serial_path(str(missing), "/dev/pts/999")  # not pointing there: kept
    assert missing.is_symlink()
    release_serial_path(str(missing), target)
    assert not missing.is_symlink()

    dangling = tmp_path / "ttyS9"
    dangling.symlink_to(tmp_path / "gone")
    claim_serial_path(str(dangling), target)
    assert os.readlink(dangling) == target

    real = tmp_path / "ttyREAL"
    real.write_text("device")
    with pytest.raises(FileExistsError, match="real file or device"):
        claim_serial_path(str(real), target)
    assert real.read_text() == "device"

    with pytest.raises(FileNotFoundError):  # a folder that does not exist is not made
        claim_serial_path(str(tmp_path / "no-such-dir" / "tty0"), target)


def test_addresses_print_as_a_user_writes_them() -> None:
    assert str(TcpAddress("127.0.0.1", 502)) == "127.0.0.1:502"
    assert str(SerialAddress("/dev/ttyUSB0")) == "/dev/ttyUSB0"
    assert str(SerialAddress()) == "<new pty>"


def test_a_driver_offers_no_simulator_by_default() -> None:
    from edge_proxy.config import LinkConfig

    assert Driver.simulator("l", LinkConfig(driver="x"), []) is None
