"""The Modbus device fixture is a real pymodbus server a real client can read."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pymodbus.client import AsyncModbusTcpClient

pytestmark = pytest.mark.integration


async def test_pymodbus_device_serves_its_registers(modbus_device: Callable[..., int]) -> None:
    port = modbus_device({0: 1234, 1: 65535, 40: 7}, inputs={3: 42}, device_id=5)
    async with AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3) as client:
        holding = await client.read_holding_registers(0, count=2, device_id=5)
        assert not holding.isError()
        assert holding.registers == [1234, 65535]
        far = await client.read_holding_registers(40, count=1, device_id=5)
        assert far.registers == [7]
        inputs = await client.read_input_registers(3, count=1, device_id=5)
        assert inputs.registers == [42]
