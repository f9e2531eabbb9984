"""GB28181 source: a SIP server acting as the platform devices register with.

The protocol is three layers, each in its own module, bottom up (as pymodbus
splits framer, transaction manager and server):

- ``transport.py``: UDP and TCP on one loop; bytes to ``SipMessage``s and
  back to a ``Peer`` (``peer.py``: transport + address).
- ``transaction_layer.py``: SIP transactions. The device's requests are
  checked and a UDP retransmission is answered from the response cache; the
  platform's own requests are client transactions (fresh Call-ID, From tag,
  branch, its own CSeq; Timer E and F), one at a time per device.
- ``platform.py``: REGISTER and MESSAGE, MANSCDP documents to registry state
  (``registry.py``) and rows (``rows.py``).

This class is only the ``StreamingSource``: it builds the three, starts and
stops them, runs the sweeper and says what is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from citylake.ingest.base import SourceContext, StreamingSource
from citylake.ingest.gb28181.config import GB28181SourceConfig
from citylake.ingest.gb28181.peer import PeerAuth
from citylake.ingest.gb28181.platform import Platform
from citylake.ingest.gb28181.registry import Registry
from citylake.ingest.gb28181.transaction_layer import TransactionLayer
from citylake.ingest.gb28181.transactions import ClientTransactions
from citylake.ingest.gb28181.transport import SipTransport


class GB28181Source(StreamingSource):
    config_model = GB28181SourceConfig

    def __init__(self, config: GB28181SourceConfig) -> None:
        super().__init__(config)
        self.config: GB28181SourceConfig = config
        # One count of everything, shared by the layers (keys: README).
        self.stats: Counter[str] = Counter()
        self.transport = SipTransport(config, self.stats, self.name)
        self.layer = TransactionLayer(config, self.stats, self.transport, self.name)
        self.platform = Platform(config, self.stats, self.layer, self.name)
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def registry(self) -> Registry:
        return self.platform.registry

    @property
    def auth(self) -> PeerAuth:
        return self.platform.auth

    @property
    def transactions(self) -> ClientTransactions:
        return self.layer.client

    @property
    def port(self) -> int:
        """The port listened on (the bound one when the config says 0)."""
        return self.transport.port

    def counters(self) -> dict[str, int]:
        return {
            "devices_evicted": self.registry.evicted,
            "nonces_evicted": self.auth.evicted,
            "nonce_replays": self.auth.replays,
            # Every key of ``stats`` is a literal of the code (methods outside
            # KNOWN_METHODS count as received_other), so all of it can be a label.
            **self.stats,
        }

    def is_up(self) -> bool:
        return self.transport.is_up()

    async def check(self) -> None:
        self.transport.check()

    async def start(self, ctx: SourceContext) -> None:
        self.platform.ctx = ctx
        await self.transport.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name=f"gb28181-sweep-{self.name}")

    async def stop(self) -> None:
        self.layer.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.transport.stop()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_every_s)
            self.layer.sweep()
            self.platform.sweep()
