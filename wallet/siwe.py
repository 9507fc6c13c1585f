"""Sign-In with Ethereum (EIP-4361) messages, used to link a non-custodial wallet's address to a user.

The backend issues a message with a fresh nonce and an expiry; the wallet signs it with personal_sign
(EIP-191); `verify` checks the text, the signature and every bound value. The caller must also consume the
nonce once (pass `expected_nonce`, then delete it), which is what stops a replayed signature.
Only externally owned accounts: contract wallets (EIP-1271) would need a chain call.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from eth_utils import is_checksum_address, to_checksum_address

from wallet.signer import recover_personal_message
from wallet.typed_data import MalformedSignature

MAX_MESSAGE_CHARS = 4096  # EIP-4361 asks implementers to bound term lengths (denial of service)
MIN_OUR_NONCE_CHARS = 16
_ALNUM = string.ascii_letters + string.digits
_HEADER = " wants you to sign in with your Ethereum account:"

# Grammar pieces from EIP-4361 / RFC 3986 / RFC 3339.
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
_AUTHORITY = re.compile(
    rf"(?:[{_UNRESERVED}%{_SUB_DELIMS}:]+@)?(?:\[[0-9A-Fa-f:.]+\]|[{_UNRESERVED}%{_SUB_DELIMS}]+)(?::[0-9]*)?"
)
_URI = re.compile(rf"{_SCHEME}:[{_UNRESERVED}%{_SUB_DELIMS}:@/?#\[\]]*")
_STATEMENT = re.compile(rf"[{_UNRESERVED}:/?#\[\]@{_SUB_DELIMS} ]+")
_REQUEST_ID = re.compile(rf"[{_UNRESERVED}%{_SUB_DELIMS}:@]*")
_NONCE = re.compile(r"[A-Za-z0-9]{8,}")
_CHAIN_ID = re.compile(r"[0-9]{1,20}")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class SiweError(ValueError):
    """A sign-in message that must not be accepted; the message says which check failed."""


class MalformedMessage(SiweError):
    pass


class DomainMismatch(SiweError):
    pass


class AddressMismatch(SiweError):
    pass


class ChainIdMismatch(SiweError):
    pass


class NonceMismatch(SiweError):
    pass


class Expired(SiweError):
    pass


class NotYetValid(SiweError):
    pass


class SignatureMismatch(SiweError):
    pass


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str  # EIP-55 checksummed
    uri: str
    chain_id: int
    nonce: str
    issued_at: datetime
    statement: str | None = None
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = ()
    scheme: str | None = None
    version: str = "1"

    def __post_init__(self) -> None:
        _check(self.scheme is None or re.fullmatch(_SCHEME, self.scheme), "scheme")
        _check(_AUTHORITY.fullmatch(self.domain), "domain")
        _check(_ADDRESS.fullmatch(self.address) and is_checksum_address(self.address), "address (EIP-55)")
        _check(self.statement is None or _STATEMENT.fullmatch(self.statement), "statement")
        _check(_URI.fullmatch(self.uri), "URI")
        _check(self.version == "1", "Version")
        _check(not isinstance(self.chain_id, bool) and isinstance(self.chain_id, int), "Chain ID")
        _check(self.chain_id > 0, "Chain ID")
        _check(_NONCE.fullmatch(self.nonce), "Nonce")
        _check(isinstance(self.issued_at, datetime) and self.issued_at.tzinfo is not None, "Issued At")
        for name in ("expiration_time", "not_before"):
            value = getattr(self, name)
            _check(value is None or (isinstance(value, datetime) and value.tzinfo is not None), name)
        _check(self.request_id is None or _REQUEST_ID.fullmatch(self.request_id), "Request ID")
        _check(all(_URI.fullmatch(r) for r in self.resources), "Resources")

    def to_text(self) -> str:
        """The EIP-4361 text (times in UTC, millisecond precision)."""
        prefix = f"{self.scheme}://" if self.scheme else ""
        lines = [f"{prefix}{self.domain}{_HEADER}", self.address, ""]
        lines += [self.statement, ""] if self.statement is not None else [""]
        lines += [
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {_format_time(self.issued_at)}",
        ]
        if self.expiration_time is not None:
            lines.append(f"Expiration Time: {_format_time(self.expiration_time)}")
        if self.not_before is not None:
            lines.append(f"Not Before: {_format_time(self.not_before)}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources:
            lines += ["Resources:", *(f"- {r}" for r in self.resources)]
        return "\n".join(lines)


def new_nonce(length: int = 24) -> str:
    """A fresh challenge nonce: alphanumerics from the OS random source (24 chars ~ 143 bits)."""
    if length < MIN_OUR_NONCE_CHARS:
        raise ValueError(f"nonces must be at least {MIN_OUR_NONCE_CHARS} characters")
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def build_message(
    domain: str,
    address: str,
    uri: str,
    chain_id: int,
    nonce: str,
    issued_at: datetime,
    expiration_time: datetime | None = None,
    statement: str | None = None,
    *,
    not_before: datetime | None = None,
    request_id: str | None = None,
    resources: Iterable[str] = (),
) -> str:
    if not isinstance(nonce, str) or len(nonce) < MIN_OUR_NONCE_CHARS:
        raise MalformedMessage(f"our nonces have at least {MIN_OUR_NONCE_CHARS} characters (use new_nonce)")
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise MalformedMessage("address is not a 0x-prefixed 20-byte hex address")
    return SiweMessage(
        domain=domain,
        address=str(to_checksum_address(address)),
        uri=uri,
        chain_id=chain_id,
        nonce=nonce,
        issued_at=issued_at,
        statement=statement,
        expiration_time=expiration_time,
        not_before=not_before,
        request_id=request_id,
        resources=tuple(resources),
    ).to_text()


def parse_message(text: str) -> SiweMessage:
    """Parse EIP-4361 text strictly: exact line structure, LF only, no trailing newline."""
    if not isinstance(text, str) or len(text) > MAX_MESSAGE_CHARS:
        raise MalformedMessage(f"message must be text of at most {MAX_MESSAGE_CHARS} characters")
    lines = text.split("\n")
    if len(lines) < 9 or not lines[0].endswith(_HEADER):
        raise MalformedMessage("not a sign-in message (header line missing)")
    origin = lines[0].removesuffix(_HEADER)
    scheme, _, domain = origin.rpartition("://")
    _check(lines[2] == "", "blank line after the address")
    # Without a statement the address is followed by two blank lines; with one, the statement is framed.
    at = 4 if lines[3] == "" else 5
    statement = None if at == 4 else lines[3]
    _check(at == 4 or lines[4] == "", "blank line after the statement")
    reader = _LineReader(lines, at)
    uri = reader.take("URI")
    version = reader.take("Version")
    chain_id = reader.take("Chain ID")
    _check(_CHAIN_ID.fullmatch(chain_id), "Chain ID")
    nonce = reader.take("Nonce")
    issued_at = _parse_time(reader.take("Issued At"), "Issued At")
    expiration = reader.take_optional("Expiration Time")
    not_before = reader.take_optional("Not Before")
    request_id = reader.take_optional("Request ID")
    resources = reader.take_resources()
    reader.expect_end()
    return SiweMessage(
        scheme=scheme or None,
        domain=domain,
        address=lines[1],
        statement=statement,
        uri=uri,
        version=version,
        chain_id=int(chain_id),
        nonce=nonce,
        issued_at=issued_at,
        expiration_time=_parse_time(expiration, "Expiration Time") if expiration is not None else None,
        not_before=_parse_time(not_before, "Not Before") if not_before is not None else None,
        request_id=request_id,
        resources=tuple(resources),
    )


def verify(
    message_text: str,
    signature: bytes | str,
    expected_domain: str,
    expected_address: str,
    expected_chain_id: int,
    now: datetime,
    *,
    expected_nonce: str | None = None,
    require_expiration: bool = True,
) -> SiweMessage:
    """Accept a signed sign-in message or raise the SiweError naming the failed check.

    Returns the parsed message (its nonce is what the caller consumes). Link challenges always expire,
    so a message without Expiration Time is refused unless `require_expiration=False`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    msg = parse_message(message_text)
    if msg.domain.lower() != expected_domain.lower():
        raise DomainMismatch(f"message is for domain {msg.domain!r}, expected {expected_domain!r}")
    if msg.address.lower() != expected_address.lower():
        raise AddressMismatch(f"message is for address {msg.address}, expected {expected_address}")
    if msg.chain_id != expected_chain_id:
        raise ChainIdMismatch(f"message is for chain {msg.chain_id}, expected {expected_chain_id}")
    if expected_nonce is not None and not secrets.compare_digest(msg.nonce, expected_nonce):
        raise NonceMismatch("message nonce is not the one issued")
    if msg.expiration_time is None and require_expiration:
        raise MalformedMessage("message has no Expiration Time")
    if msg.expiration_time is not None and now >= msg.expiration_time:
        raise Expired(f"message expired at {_format_time(msg.expiration_time)}")
    if msg.not_before is not None and now < msg.not_before:
        raise NotYetValid(f"message is not valid before {_format_time(msg.not_before)}")
    try:
        signer = recover_personal_message(message_text, signature)
    except MalformedSignature as exc:
        raise SignatureMismatch(f"signature is malformed: {exc}") from exc
    if signer != msg.address:
        raise SignatureMismatch(f"signature is by {signer}, not {msg.address}")
    return msg


class _LineReader:
    """Walks the "Key: value" lines after the statement, in the order the grammar fixes."""

    def __init__(self, lines: list[str], at: int) -> None:
        self.lines, self.at = lines, at

    def take(self, key: str) -> str:
        value = self.take_optional(key)
        if value is None:
            raise MalformedMessage(f"expected line {key!r}")
        return value

    def take_optional(self, key: str) -> str | None:
        if self.at >= len(self.lines) or not self.lines[self.at].startswith(f"{key}: "):
            return None
        self.at += 1
        return self.lines[self.at - 1].removeprefix(f"{key}: ")

    def take_resources(self) -> list[str]:
        if self.at >= len(self.lines) or self.lines[self.at] != "Resources:":
            return []
        self.at += 1
        items = []
        while self.at < len(self.lines) and self.lines[self.at].startswith("- "):
            items.append(self.lines[self.at].removeprefix("- "))
            self.at += 1
        return items

    def expect_end(self) -> None:
        if self.at != len(self.lines):
            raise MalformedMessage(f"unexpected line {self.at + 1}: {self.lines[self.at][:40]!r}")


def _check(ok: object, what: str) -> None:
    if not ok:
        raise MalformedMessage(f"invalid or missing {what}")


def _parse_time(text: str, what: str) -> datetime:
    _check(_DATE_TIME.fullmatch(text), what)
    # RFC 3339 allows any number of fraction digits; datetime keeps microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.upper())
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise MalformedMessage(f"invalid {what}") from None


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
