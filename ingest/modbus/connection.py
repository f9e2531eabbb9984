"""One pymodbus client per endpoint, shared by every device behind it.

A gateway (or an RS-485 line) answers one request at a time, so requests on an
endpoint are serialised by an ``asyncio.Lock``; devices on different endpoints
are read concurrently on the one event loop. The client connects lazily,
reconnects after a failure with exponential backoff, and every read is bounded
by ``asyncio.wait_for``. pymodbus's own retries and reconnect loop are switched
off: retries are per device (adapter.py) and reconnection is done here, so both
are counted and bounded in one place.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from citylake.ingest.backoff import Backoff
from citylake.ingest.modbus.codec import ModbusRequest, exception_text
from citylake.ingest.modbus.config import ModbusEndpoint

log = logging.getLogger(__name__)

# Timeouts in a row, with no answer at all in between, after which the
# connection is dropped and made anew: a half-open TCP connection or a
# converter that lost its serial side only recovers that way. Any answer
# (an exception response too) resets the count, so one silent slave behind a
# gateway does not disconnect its neighbours.
RECONNECT_AFTER_TIMEOUTS = 3


class ModbusReadError(Exception):
    """A read that yielded no values; ``str()`` is the reason's last part."""


class ModbusExceptionResponse(ModbusReadError):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(exception_text(code))


class ModbusNoResponse(ModbusReadError):
    """Nothing (or nothing valid: bad CRC, wrong frame) came back in time."""


class ModbusConnectionFailed(ModbusReadError):
    """The endpoint could not be reached."""


@dataclass(frozen=True)
class ReadResult:
    """What one read returned: registers or bits, trimmed to the request's count."""

    words: list[int] | None
    bits: list[bool] | None

    def payload(self) -> bytes:
        """The response data as sent on the wire (registers big-endian), for ``raw``."""
        if self.words is not None:
            return struct.pack(f">{len(self.words)}H", *self.words)
        bits = self.bits or []
        return bytes(
            sum(1 << i for i, bit in enumerate(bits[start : start + 8]) if bit)
            for start in range(0, len(bits), 8)
        )


class EndpointConnection:
    """The shared client of one endpoint and the lock that serialises it."""

    def __init__(
        self,
        endpoint: ModbusEndpoint,
        connect_timeout_s: float,
        backoff_s: float,
        max_backoff_s: float,
        pause_between_requests_s: float = 0.0,
    ) -> None:
        self.endpoint = endpoint
        self.connect_timeout_s = connect_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.pause_s = pause_between_requests_s
        self.lock = asyncio.Lock()
        self.requests_sent = 0
        self._client: ModbusBaseClient | None = None
        self._backoff = Backoff(backoff_s, max_backoff_s)
        self._next_connect_at = 0.0
        self._timeouts_in_a_row = 0
        self._last_request_end = 0.0

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    def _new_client(self) -> ModbusBaseClient:
        ep = self.endpoint
        # The client's own timeout sits above ours so our wait_for always fires
        # first and pymodbus never counts (and acts on) a timeout itself.
        timeout = self.connect_timeout_s + 1.0
        if ep.transport == "serial":
            return AsyncModbusSerialClient(
                ep.serial_port, framer=FramerType.RTU, baudrate=ep.baudrate, parity=ep.parity,
                stopbits=ep.stopbits, bytesize=ep.bytesize, timeout=timeout, retries=0, reconnect_delay=0,
            )  # fmt: skip
        framer = FramerType.SOCKET if ep.transport == "tcp" else FramerType.RTU
        return AsyncModbusTcpClient(
            ep.host, port=ep.port, framer=framer, timeout=timeout, retries=0, reconnect_delay=0
        )

    async def connect(self) -> None:
        """Connect if not connected; raises ``ModbusConnectionFailed``. Within the
        backoff after a failure it fails at once rather than hammer the peer."""
        if self.connected:
            return
        now = time.monotonic()
        if now < self._next_connect_at:
            wait = self._next_connect_at - now
            raise ModbusConnectionFailed(
                f"not connected to {self.endpoint.key} (next attempt in {wait:.1f}s)"
            )
        self.close()
        client: ModbusBaseClient | None = None
        try:
            client = self._new_client()
            ok = await asyncio.wait_for(client.connect(), self.connect_timeout_s)
            reason = "connection refused or unreachable"
        except TimeoutError:
            ok, reason = False, f"no connection within {self.connect_timeout_s}s"
        except (OSError, ModbusException, RuntimeError) as exc:  # RuntimeError: pyserial missing
            ok, reason = False, str(exc)
        if not ok or client is None:
            if client is not None:
                client.close()
            delay = self._backoff.next()
            self._next_connect_at = time.monotonic() + delay
            log.warning("modbus %s: %s; next attempt in %.1fs", self.endpoint.key, reason, delay)
            raise ModbusConnectionFailed(f"cannot connect to {self.endpoint.key}: {reason}")
        self._client = client
        self._backoff.reset()
        self._timeouts_in_a_row = 0
        log.info("modbus %s: connected", self.endpoint.key)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _pause(self) -> None:
        # Some devices and RS-485 converters need quiet time between frames.
        if self.pause_s > 0:
            remaining = self._last_request_end + self.pause_s - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)

    async def read(self, request: ModbusRequest, slave_id: int, timeout_s: float) -> ReadResult:
        """One attempt at ``request`` on slave ``slave_id``, waiting ``timeout_s``."""
        async with self.lock:
            if not self.connected:  # the common case costs no coroutine
                await self.connect()
            if self.pause_s > 0:
                await self._pause()
            client = self._client
            assert client is not None  # connect() returned, so there is one
            self.requests_sent += 1
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps
                # every request in a task of its own.
                async with asyncio.timeout(timeout_s):
                    response = await self._send(client, request, slave_id)
            except TimeoutError:
                self._note_timeout()
                raise ModbusNoResponse(f"no response within {timeout_s}s") from None
            except ConnectionException as exc:
                self.close()
                raise ModbusConnectionFailed(f"connection to {self.endpoint.key} lost: {exc}") from None
            except ModbusIOException as exc:
                self._note_timeout()
                raise ModbusNoResponse(f"no valid response: {exc}") from None
            finally:
                self._last_request_end = time.monotonic()
            self._timeouts_in_a_row = 0
        return _result(request, response)

    def _note_timeout(self) -> None:
        self._timeouts_in_a_row += 1
        if self._timeouts_in_a_row >= RECONNECT_AFTER_TIMEOUTS:
            log.warning(
                "modbus %s: %d requests in a row unanswered; reconnecting",
                self.endpoint.key,
                self._timeouts_in_a_row,
            )
            self.close()

    @staticmethod
    async def _send(client: ModbusBaseClient, request: ModbusRequest, slave_id: int) -> ModbusPDU:
        read = getattr(client, _READ_METHODS[request.register_type])
        response: ModbusPDU = await read(request.address, count=request.count, device_id=slave_id)
        return response


_READ_METHODS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


def _result(request: ModbusRequest, response: ModbusPDU) -> ReadResult:
    if response.isError():
        raise ModbusExceptionResponse(int(getattr(response, "exception_code", 0)))
    if response.function_code != request.function_code:
        # RTU has no transaction id: a late answer to an earlier request can
        # arrive in place of this one. Refuse it rather than mis-assign values.
        raise ModbusNoResponse(
            f"answer for function code {response.function_code}, not {request.function_code}"
        )
    if request.reads_bits:
        bits = [bool(b) for b in response.bits]
        if len(bits) < request.count:
            raise ModbusNoResponse(f"short answer: {len(bits)} bits for {request.count}")
        return ReadResult(None, bits[: request.count])
    words = [int(w) for w in response.registers]
    if len(words) != request.count:
        raise ModbusNoResponse(f"answer has {len(words)} registers, asked for {request.count}")
    return ReadResult(words, None)
