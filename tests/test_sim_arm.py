"""The simulated arm's server: going away and coming back where it was."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from scallop.robot.arm import ArmClient, ArmState
from scallop.robot.config import ArmConfig
from scallop.sim.arm import SimArm
from scallop.sim.clock import VirtualClock


def poll_until(client: ArmClient, clock: VirtualClock, kind: str) -> list:
    events = []
    for _ in range(100):
        events += client.poll()
        if any(e.kind == kind for e in events):
            return events
        clock.sleep(0.05)
    raise AssertionError(f"no {kind!r} event in {[e.kind for e in events]}")


@pytest.mark.parametrize("port", [0, None], ids=["system-chosen", "given"])
def test_an_arm_that_goes_offline_comes_back_on_the_same_port_as_it_was(port):
    clock = VirtualClock()
    if port is None:  # a given port: take a free one from the system
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    arm = SimArm(ArmConfig(), clock, port=port).start()
    client = ArmClient(replace(arm.config, transport=arm.transport_config(timeout_s=0.2)), clock)
    try:
        client.connect()
        served = arm.port
        arm.inject_fault()  # robot state that must outlive the outage
        arm.go_offline()
        arm.go_offline()  # twice is harmless
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", served), timeout=1.0).close()
        poll_until(client, clock, "disconnected")
        assert arm.come_back() is arm
        assert arm.port == served
        # The controller's transport, unchanged, finds the arm where it was, as it was.
        poll_until(client, clock, "connected")
        assert client.read_status().state == ArmState.FAULT
    finally:
        client.close()
        arm.close()
