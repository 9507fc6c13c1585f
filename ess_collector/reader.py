"""Read one ESS site over Modbus TCP (pymodbus 3.16 asyncio client) and decode it into a ``Reading``.

Robustness rules (from the brief): per-device timeout, exactly one retry, whole-model reads so a 32-bit
value and its scale factor always come from the same response, typed errors instead of zeros. pymodbus'
own retry loop is disabled (``retries=0``) and so is its background reconnect (``reconnect_delay=0``):
the caller decides about retries and back-off, and a site that is down must not cost a reconnect task.

Cost per poll (three requests) matters at 1,000 sites a second, so the client is used lean: responses
to function code 3 are decoded by ``RegisterBlock`` (one ``struct`` call per response instead of one per
register, and a short ``str()``, which pymodbus builds for a debug line whether debug logging is on or
not), the payload bytes go to ``sunspec.decode_payload`` unconverted, and the per-request timeout is
pymodbus' own (``asyncio.timeout`` is added only when a caller asks for another one than the client's).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from common import clock

from .netpolicy import HostOutsideSiteNetworks, IPNetwork, SiteHostRefused, resolve_allowed_async
from .sunspec import READS, MapError, Reading, decode_payload

RETRY_DELAY_S = 0.05  # pause before retrying a busy device; immediate retries just hit it busy again


class SiteReadError(Exception):
    """Base class: the site could not be read this time."""


class SiteUnreachable(SiteReadError):
    """Connection refused/lost, or no connection could be made."""


class SiteTimeout(SiteUnreachable):
    """Connected, but no response within the timeout."""


class SiteNotAllowed(SiteReadError):
    """The site's host resolves outside the networks sites may be in: no connection was made."""


class SiteBusy(SiteReadError):
    """The device answered with Modbus exception 0x06 Slave Device Busy (or 0x05 Acknowledge)."""


class BadMap(SiteReadError):
    """The device answered, but not with our SunSpec map."""


_WORDS = [struct.Struct(f">{n}H") for n in range(126)]  # FC3 answers carry at most 125 registers


class RegisterBlock(ReadHoldingRegistersResponse):
    """A function code 3 response that keeps its payload bytes and unpacks them in one call."""

    payload: bytes = b""

    def decode(self, data: bytes) -> None:
        n = data[0]
        if n >= len(data) or n % 2 or n > 250:
            raise ModbusIOException(
                f"byte_count {n} does not fit a packet of {len(data)} bytes", function_code=3
            )
        self.payload = data[1 : 1 + n]
        self.registers = list(_WORDS[n // 2].unpack(self.payload))

    def __str__(self) -> str:  # pymodbus formats every decoded PDU for a debug line, even with debug off
        return f"RegisterBlock(dev_id={self.dev_id}, transaction_id={self.transaction_id}, count={len(self.payload) // 2})"


def make_client(host: str, port: int, timeout: float = 1.5) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient(host, port=port, timeout=timeout, retries=0, reconnect_delay=0)
    client.register(RegisterBlock)  # this client's decoder only: FC3 answers become RegisterBlocks
    return client


async def _read_once(client: AsyncModbusTcpClient, device_id: int, timeout: float) -> Reading:
    if not client.connected and not await client.connect():
        raise SiteUnreachable(f"cannot connect to {client.comm_params.host}:{client.comm_params.port}")
    payload: list[bytes] = []
    started = time.monotonic()
    # pymodbus already times every request out after the client's timeout; a second timer per request
    # is only set when this call asks for a different timeout.
    own_timeout = timeout == client.comm_params.timeout_connect
    try:
        for address, count in READS:
            if own_timeout:
                rr = await client.read_holding_registers(address, count=count, device_id=device_id)
            else:
                async with asyncio.timeout(timeout):
                    rr = await client.read_holding_registers(address, count=count, device_id=device_id)
            if rr.isError():
                code = getattr(rr, "exception_code", None)
                if code in (5, 6):
                    raise SiteBusy(f"device busy (exception {code}) at {address}")
                if code == 2:
                    raise BadMap(f"illegal address {address}..{address + count - 1}")
                raise SiteReadError(f"Modbus exception {code} at {address}")
            if len(rr.registers) != count:
                raise BadMap(f"short read at {address}: {len(rr.registers)} of {count}")
            payload.append(rr.payload if isinstance(rr, RegisterBlock) else _WORDS[count].pack(*rr.registers))
    except (TimeoutError, ModbusIOException) as exc:
        raise SiteTimeout(f"no response within {timeout}s: {exc}") from exc
    except ConnectionException as exc:
        raise SiteUnreachable(str(exc)) from exc
    except ModbusException as exc:
        raise SiteReadError(str(exc)) from exc
    received_at = clock.now()  # readings are timestamped on arrival; the device clock only checks drift
    span = time.monotonic() - started
    try:
        return decode_payload(b"".join(payload), received_at=received_at, read_wall_s=span)
    except MapError as exc:
        raise BadMap(str(exc)) from exc


async def read_with_client(
    client: AsyncModbusTcpClient, device_id: int = 1, timeout: float = 1.5, retries: int = 1
) -> Reading:
    """Read with an existing client; after a timeout or lost connection the client is closed, so the
    retry (and the next poll) starts on a fresh connection and never sees a stale late response.

    Each request ends after the shorter of ``timeout`` and the client's own timeout (pymodbus always
    runs its timer): make the client with the timeout you mean (``make_client``)."""
    last: SiteReadError | None = None
    for attempt in range(retries + 1):
        try:
            return await _read_once(client, device_id, timeout)
        except BadMap:
            raise  # a wrong map does not fix itself on a retry
        except SiteUnreachable as exc:
            client.close()
            last = exc
        except SiteReadError as exc:
            last = exc
            if attempt < retries:
                await asyncio.sleep(RETRY_DELAY_S)
    assert last is not None
    raise last


async def read_site(
    client_or_host: AsyncModbusTcpClient | str, port: int = 502, device_id: int = 1, timeout: float = 1.5
) -> Reading:
    """Read one site: three whole-model reads, SunS marker and model ids verified, one retry.

    Raises SiteUnreachable (SiteTimeout), SiteBusy, BadMap or SiteReadError. With a host name a
    temporary connection is opened and closed; pass a client (or use SiteConnectionPool) to poll often.
    """
    if not isinstance(client_or_host, str):
        return await read_with_client(client_or_host, device_id, timeout)
    client = make_client(client_or_host, port, timeout)
    try:
        return await read_with_client(client, device_id, timeout)
    finally:
        client.close()


class SiteConnectionPool:
    """One persistent client per (host, port): polling does not reconnect unless the connection failed."""

    def __init__(self, timeout: float = 1.5, device_id: int = 1) -> None:
        self.timeout, self.device_id = timeout, device_id
        self._clients: dict[tuple[str, int], AsyncModbusTcpClient] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def client(self, host: str, port: int) -> AsyncModbusTcpClient:
        key = (host, port)
        if key not in self._clients:
            self._clients[key] = make_client(host, port, self.timeout)
        return self._clients[key]

    async def checked_client(
        self, host: str, port: int, networks: Sequence[IPNetwork]
    ) -> AsyncModbusTcpClient:
        """The pooled client for (host, port), only ever connected to an address inside ``networks``.

        While its connection is open it is reused; otherwise the host is resolved again, every address
        it resolves to must be inside ``networks`` (else SiteNotAllowed), and the client is pointed at
        the address that was checked, so the socket layer never resolves the name a second time."""
        client = self._clients.get((host, port))
        if client is not None and client.connected:
            return client
        try:
            address = (await resolve_allowed_async(host, port, networks))[0]
        except HostOutsideSiteNetworks as exc:
            self.discard(host, port)
            raise SiteNotAllowed(str(exc)) from None
        except SiteHostRefused as exc:
            raise SiteUnreachable(str(exc)) from None
        if client is None or client.comm_params.host != address:
            self.discard(host, port)
            client = self._clients[(host, port)] = make_client(address, port, self.timeout)
        return client

    async def read(self, host: str, port: int) -> Reading:
        return await read_with_client(self.client(host, port), self.device_id, self.timeout)

    async def read_many(self, sites: Sequence[tuple[str, int]]) -> list[Reading | SiteReadError]:
        """Poll many sites concurrently; each result is a Reading or the error for that site."""

        async def one(host: str, port: int) -> Reading | SiteReadError:
            try:
                return await self.read(host, port)
            except SiteReadError as exc:
                return exc

        return list(await asyncio.gather(*(one(h, p) for h, p in sites)))

    def discard(self, host: str, port: int) -> None:
        if client := self._clients.pop((host, port), None):
            client.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    async def __aenter__(self) -> SiteConnectionPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
