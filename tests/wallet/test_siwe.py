"""Sign-In with Ethereum link challenges: format, strict parsing, and every verification check."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.datatypes import PrivateKey
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.siwe import (
    AddressMismatch,
    ChainIdMismatch,
    DomainMismatch,
    Expired,
    MalformedMessage,
    NonceMismatch,
    NotYetValid,
    SignatureMismatch,
    SiweError,
    build_message,
    new_nonce,
    parse_message,
    verify,
)

KEY = PrivateKey(keccak(text="siwe wallet"))
ADDRESS = KEY.public_key.to_checksum_address()
OTHER_KEY = PrivateKey(keccak(text="someone else"))
ISSUED = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
EXPIRES = ISSUED + timedelta(minutes=5)
NONCE = "Nc4aQ9vXk2LmP7sR8tYw"

# The example message of EIP-4361 (eips.ethereum.org/EIPS/eip-4361).
SPEC_EXAMPLE = """service.org wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ServiceOrg Terms of Service: https://service.org/tos

URI: https://service.org/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json"""


def message(**overrides: object) -> str:
    args: dict[str, object] = {
        "domain": "essx.example.org",
        "address": ADDRESS,
        "uri": "https://essx.example.org/api/v1/wallets/link",
        "chain_id": 1001,
        "nonce": NONCE,
        "issued_at": ISSUED,
        "expiration_time": EXPIRES,
        "statement": "Link this wallet to your ESSX account.",
    }
    return build_message(**{**args, **overrides})  # type: ignore[arg-type]


def sign(text: str, key: PrivateKey = KEY) -> bytes:
    return bytes(Account.sign_message(encode_defunct(text=text), key).signature)


def check(text: str, signature: bytes | str | None = None, /, **overrides: object) -> object:
    args: dict[str, object] = {
        "expected_domain": "essx.example.org",
        "expected_address": ADDRESS,
        "expected_chain_id": 1001,
        "now": ISSUED + timedelta(minutes=1),
    }
    return verify(text, sign(text) if signature is None else signature, **{**args, **overrides})  # type: ignore[arg-type]


def test_message_text_follows_eip_4361() -> None:
    assert message().split("\n") == [
        "essx.example.org wants you to sign in with your Ethereum account:",
        ADDRESS,
        "",
        "Link this wallet to your ESSX account.",
        "",
        "URI: https://essx.example.org/api/v1/wallets/link",
        "Version: 1",
        "Chain ID: 1001",
        f"Nonce: {NONCE}",
        "Issued At: 2026-11-22T09:30:00.000Z",
        "Expiration Time: 2026-11-22T09:35:00.000Z",
    ]


def test_round_trip() -> None:
    text = message(
        address=ADDRESS.lower(),
        not_before=ISSUED,
        request_id="req-1",
        resources=["https://essx.example.org/terms"],
    )
    parsed = parse_message(text)
    assert parsed.address == ADDRESS  # checksummed when built
    assert (parsed.domain, parsed.chain_id, parsed.nonce, parsed.version) == (
        "essx.example.org",
        1001,
        NONCE,
        "1",
    )
    assert (parsed.issued_at, parsed.expiration_time, parsed.not_before) == (ISSUED, EXPIRES, ISSUED)
    assert (parsed.request_id, parsed.resources) == ("req-1", ("https://essx.example.org/terms",))
    assert parsed.to_text() == text


def test_message_without_statement_has_two_blank_lines() -> None:
    text = message(statement=None)
    assert f"{ADDRESS}\n\n\nURI: " in text
    parsed = parse_message(text)
    assert parsed.statement is None and parsed.to_text() == text


def test_parses_the_spec_example() -> None:
    parsed = parse_message(SPEC_EXAMPLE)
    assert parsed.domain == "service.org"
    assert parsed.statement == "I accept the ServiceOrg Terms of Service: https://service.org/tos"
    assert parsed.issued_at == datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC)
    assert len(parsed.resources) == 2 and parsed.expiration_time is None


def test_parses_scheme_and_offsets() -> None:
    text = SPEC_EXAMPLE.replace("service.org wants", "https://service.org wants").replace(
        "16:25:24Z", "18:25:24.123456789+02:00"
    )
    parsed = parse_message(text)
    assert parsed.scheme == "https" and parsed.domain == "service.org"
    assert parsed.issued_at == datetime(2021, 9, 30, 18, 25, 24, 123456, tzinfo=timezone(timedelta(hours=2)))


def test_verify_accepts_a_valid_signature_and_returns_the_message() -> None:
    text = message()
    parsed = check(text, expected_nonce=NONCE)
    assert parsed == parse_message(text)
    check(text, "0x" + sign(text).hex(), expected_address=ADDRESS.lower(), expected_domain="ESSX.example.org")


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        ({"expected_domain": "evil.example.org"}, DomainMismatch, "evil.example.org"),
        ({"expected_chain_id": 8217}, ChainIdMismatch, "expected 8217"),
        (
            {"expected_address": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"},
            AddressMismatch,
            "expected 0x3C44",
        ),
        ({"expected_nonce": "Zz" * 10}, NonceMismatch, "nonce"),
        ({"now": EXPIRES}, Expired, "expired"),
        ({"now": EXPIRES + timedelta(days=1)}, Expired, "expired"),
    ],
)
def test_verify_rejects(overrides: dict[str, object], error: type[SiweError], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        check(message(), **overrides)


def test_verify_respects_not_before() -> None:
    text = message(not_before=ISSUED + timedelta(minutes=2))
    with pytest.raises(NotYetValid):
        check(text)
    check(text, now=ISSUED + timedelta(minutes=2))


def test_verify_rejects_a_signature_from_another_address() -> None:
    text = message()
    with pytest.raises(SignatureMismatch, match=f"not {ADDRESS}"):
        check(text, sign(text, OTHER_KEY))
    with pytest.raises(SignatureMismatch):
        check(text, sign(text.replace("1001", "1002")))  # signed a different text
    with pytest.raises(SignatureMismatch, match="malformed"):
        check(text, b"\x00" * 65)


def test_verify_requires_an_expiry_unless_told_otherwise() -> None:
    text = message(expiration_time=None)
    with pytest.raises(MalformedMessage, match="Expiration Time"):
        check(text)
    check(text, require_expiration=False)
    with pytest.raises(ValueError, match="timezone"):
        check(message(), now=datetime(2026, 11, 22, 9, 31))


def replace_line(text: str, index: int, line: str | None) -> str:
    lines = text.split("\n")
    if line is None:
        del lines[index]
    else:
        lines[index] = line
    return "\n".join(lines)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        message() + "\n",
        message().replace("\n", "\r\n"),
        replace_line(message(), 1, ADDRESS.lower()),  # not EIP-55
        replace_line(message(), 1, "0x1234"),
        replace_line(message(), 2, "x"),
        replace_line(message(), 4, None),  # statement not followed by a blank line
        replace_line(message(), 3, "Tabs\tare not allowed"),
        replace_line(message(), 3, "Ünïcode is not allowed"),
        replace_line(message(), 5, "URI: not a uri"),
        replace_line(message(), 6, "Version: 2"),
        replace_line(message(), 7, "Chain ID: one"),
        replace_line(message(), 8, "Nonce: short"),
        replace_line(message(), 8, "Nonce: has-dash-123"),
        replace_line(message(), 9, "Issued At: 2026-13-01T00:00:00Z"),
        replace_line(message(), 9, "Issued At: yesterday"),
        replace_line(message(), 9, None),
        replace_line(message(), 10, "Expiration Time: 2026-11-22"),
        replace_line(message(), 10, "Unknown: field"),
        message() + "\nResources:\n- not a uri",
        message(not_before=ISSUED).replace("Expiration", "XExpiration"),
        message(request_id="ab").replace("Request ID: ab", "Request ID: a b"),
        message(request_id="a") + "\nNot Before: 2026-11-22T09:30:00Z",  # out of order
        "\n".join(message().split("\n")[:5] + message().split("\n")[6:]),  # URI missing
        "x" * 5000,
    ],
)
def test_malformed_messages_are_refused(text: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_message(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_parser_only_raises_malformed(text: str) -> None:
    with contextlib.suppress(MalformedMessage):
        parse_message(text)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_line_edits_of_a_valid_message_parse_or_fail_cleanly(data: st.DataObject) -> None:
    lines = message(resources=["https://a.example/x"]).split("\n")
    index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
    action = data.draw(st.sampled_from(["delete", "duplicate", "truncate"]))
    if action == "delete":
        del lines[index]
    elif action == "duplicate":
        lines.insert(index, lines[index])
    else:
        lines[index] = lines[index][: data.draw(st.integers(min_value=0, max_value=len(lines[index])))]
    with contextlib.suppress(MalformedMessage):
        parse_message("\n".join(lines))


def test_nonces() -> None:
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(n) == 24 and n.isalnum() and n.isascii() for n in nonces)
    with pytest.raises(ValueError):
        new_nonce(15)


@pytest.mark.parametrize(
    "overrides",
    [
        {"nonce": "abcdefgh12"},  # valid EIP-4361 but shorter than ours
        {"statement": "two\nlines"},
        {"statement": ""},
        {"issued_at": datetime(2026, 11, 22, 9, 30)},  # naive
        {"chain_id": 0},
        {"chain_id": True},
        {"domain": "bad domain"},
        {"address": "0x1234"},
    ],
)
def test_build_refuses_bad_fields(overrides: dict[str, object]) -> None:
    with pytest.raises(MalformedMessage):
        message(**overrides)
