"""Without a browser: every dashboard module parses, and `/` and the assets are served with the right
content types and headers (and nothing outside the static folder is)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from app.web.router import STATIC, UPLOT_DIST

MODULES = sorted((STATIC / "js").rglob("*.js"))


def node_check(source: str) -> subprocess.CompletedProcess[str]:
    # Through stdin as a module: `node --check file.js` on Node 20 accepts some broken ES modules.
    node = shutil.which("node")
    if node is None:
        pytest.skip("`node` is not installed: the JavaScript syntax check needs Node.js 20+")
    return subprocess.run(
        [node, "--input-type=module", "--check"], input=source, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(STATIC)))
def test_every_module_parses(module: Path) -> None:
    done = node_check(module.read_text())
    assert done.returncode == 0, done.stderr


def test_the_syntax_check_catches_a_broken_module() -> None:
    assert node_check("import { h } from './dom.js';\nexport const x = ;\n").returncode != 0


def exported_names(module: Path) -> set[str]:
    text = module.read_text()
    names = set(re.findall(r"^export (?:async )?(?:function|const|let|class) (\w+)", text, re.M))
    for group in re.findall(r"^export \{([^}]*)\}", text, re.M):
        names |= {n.split(" as ")[-1].strip() for n in group.split(",") if n.strip()}
    return names


def test_every_relative_import_exists_and_exports_what_is_imported() -> None:
    for module in MODULES:
        text = module.read_text()
        for target in re.findall(r"""(?:from|import\()\s*['"](\.{1,2}/[^'"]+)['"]""", text):
            assert (module.parent / target).resolve().is_file(), f"{module.name} imports missing {target}"
        for names, target in re.findall(r"""^import \{([^}]*)\} from ['"](\.{1,2}/[^'"]+)['"]""", text, re.M):
            wanted = {n.split(" as ")[0].strip() for n in names.split(",") if n.strip()}
            missing = wanted - exported_names((module.parent / target).resolve())
            assert not missing, f"{module.name} imports {sorted(missing)} that {target} does not export"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # No lifespan: the static routes need neither the chain nor the database.
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("web")), workers=False)
    yield TestClient(app)


def test_index_is_html_with_a_strict_policy(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/ui/js/main.js">' in r.text
    for ref in re.findall(r'(?:src|href)="(/ui/[^"]+)"', r.text):
        assert client.get(ref).status_code == 200, ref


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/ui/js/main.js", "text/javascript; charset=utf-8"),
        ("/ui/js/views/wallet.js", "text/javascript; charset=utf-8"),
        ("/ui/css/app.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
        ("/favicon.ico", "image/svg+xml"),
    ],
)
def test_assets_have_their_content_types(client: TestClient, path: str, content_type: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type


def test_uplot_is_served_from_node_modules(client: TestClient) -> None:
    if not UPLOT_DIST.is_dir():
        pytest.skip("node_modules/uplot is missing: run `npm install` (make install does)")
    js = client.get("/ui/vendor/uplot/uPlot.esm.js")
    assert js.status_code == 200
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "export" in js.text
    css = client.get("/ui/vendor/uplot/uPlot.min.css")
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"


def test_the_pinned_uplot_is_the_one_in_package_json() -> None:
    import json

    root = STATIC.parents[2]
    pinned = json.loads((root / "package.json").read_text())["dependencies"]["uplot"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "uplot must be pinned exactly"
    locked = json.loads((root / "package-lock.json").read_text())["packages"]["node_modules/uplot"]
    assert locked["version"] == pinned


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../router.py",
        "/ui/%2e%2e/router.py",
        "/ui/js/%2e%2e/%2e%2e/router.py",
        "/ui/js/%2e%2e/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        "/ui/vendor/uplot/package.json",
        "/ui/vendor/uplot/%2e%2e/package.json",
        "/ui/.hidden",
        "/ui/nothing.js",
        "/ui/js",
    ],
)
def test_nothing_outside_the_dashboard_is_served(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404  # from our route, or from no route once the client normalised ".."
    assert r.json()["error"] in ("AssetNotFound", "NotFound")


def test_the_dashboard_is_not_part_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not any(p.startswith("/ui") for p in paths)


def run_module_script(script: str) -> str:
    """Runs an ES module snippet in Node that may import the dashboard's modules from `static/js/`."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("`node` is not installed: the JavaScript checks need Node.js 20+")
    base = (STATIC / "js").as_uri()
    done = subprocess.run(
        [node, "--input-type=module", "-e", script.replace("@JS@", base)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_event_stream_parser_and_helpers() -> None:
    """The pieces that need no browser: SSE parsing, open slots after gate closure, coin formatting."""
    run_module_script(
        """
        import assert from 'node:assert/strict';
        import { parseBlock, isAbout } from '@JS@/live.js';
        import { openSlots } from '@JS@/views/common.js';
        import { fmtCoin, pick, itemsOf } from '@JS@/dom.js';

        const e = parseBlock('id: 42\\nevent: transfer.step\\ndata: {"transfer_id": "t1",\\ndata:  "kind": "mined"}');
        assert.equal(e.type, 'transfer.step');
        assert.equal(e.id, '42');
        assert.deepEqual(e.data, { transfer_id: 't1', kind: 'mined' });
        assert.equal(parseBlock(': keep-alive'), null);
        assert.equal(parseBlock('data: {"type": "fault.opened", "site_id": 3}').type, 'fault.opened');
        assert.equal(parseBlock('data: plain words').data, 'plain words');
        assert.ok(isAbout({ type: 'site.fault.opened' }, 'fault'));

        const now = Date.parse('2026-11-22T10:09:59Z');
        const slots = openSlots({ slotMinutes: 15, gateClosureMinutes: 5, count: 3, now });
        assert.deepEqual(slots.map((d) => d.toISOString()), [
          '2026-11-22T10:15:00.000Z', '2026-11-22T10:30:00.000Z', '2026-11-22T10:45:00.000Z',
        ]);
        const atGate = openSlots({ slotMinutes: 15, gateClosureMinutes: 5, count: 1, now: Date.parse('2026-11-22T10:10:00Z') });
        assert.equal(atGate[0].toISOString(), '2026-11-22T10:30:00.000Z');

        assert.equal(fmtCoin('1234567.500000000000000001', 'ENC'), '1,234,567.5 ENC');
        assert.equal(fmtCoin('-3.25'), '-3.25');
        assert.equal(fmtCoin(null), '—');
        assert.equal(pick({ a: { b: 0 } }, 'x', 'a.b'), 0);
        assert.deepEqual(itemsOf({ items: [1] }), [1]);
        assert.deepEqual(itemsOf([2]), [2]);
        """
    )


def test_browser_wallet_helpers() -> None:
    """The pure parts of the wallet flow: the words shown for a served typed data (and the refusals), the
    wallet_addEthereumChain parameters, and merging transfer records with the chain index."""
    run_module_script(
        """
        import assert from 'node:assert/strict';
        import { addChainParams, describeTypedData, parseChainId, unitsToCoins, utf8Hex } from '@JS@/eip1193.js';
        import { mergeMovements } from '@JS@/views/wallet.js';

        const coin = { chain_id: 31337, address: '0x5FbDB2315678afecb367f032d93F642f64180aa3', symbol: 'ENC', decimals: 18 };
        const me = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';
        const typed = {
          primaryType: 'TransferWithAuthorization',
          domain: { name: 'Energy Coin', version: '1', chainId: 31337, verifyingContract: coin.address.toLowerCase() },
          message: { from: me, to: '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC', value: '2500000000000000001',
                     validAfter: '0', validBefore: '1796464800', nonce: '0x' + '11'.repeat(32) },
        };
        const words = describeTypedData(typed, coin, me.toLowerCase());
        assert.equal(words.kind, 'transfer');
        assert.equal(words.amount, '2.500000000000000001');  // exact: no float on the way
        assert.equal(words.to, typed.message.to);
        assert.equal(words.validUntil.toISOString(), '2026-12-05T10:00:00.000Z');
        assert.equal(describeTypedData({ ...typed, primaryType: 'ReceiveWithAuthorization' }, coin).kind, 'escrow');
        assert.throws(() => describeTypedData({ ...typed, domain: { ...typed.domain, chainId: 1 } }, coin), /chain 1/);
        assert.throws(() => describeTypedData({ ...typed, domain: { ...typed.domain, verifyingContract: me } }, coin), /contract/);
        assert.throws(() => describeTypedData({ ...typed, primaryType: 'Permit' }, coin), /Permit/);
        assert.throws(() => describeTypedData(typed, coin, '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC'), /spends from/);
        assert.equal(unitsToCoins('5'), '0.000000000000000005');
        assert.equal(unitsToCoins('120000000000000000000'), '120');

        const net = { chain_id_hex: '0x3e9', chain_name: 'Kaia Kairos Testnet', rpc_urls: ['https://public-en-kairos.node.kaia.io'],
                      native_currency: { name: 'KAIA', symbol: 'KAIA', decimals: 18 }, block_explorer_urls: null };
        assert.deepEqual(Object.keys(addChainParams(net)), ['chainId', 'chainName', 'rpcUrls', 'nativeCurrency']);
        assert.deepEqual(addChainParams({ ...net, block_explorer_urls: ['https://kairos.kaiascan.io'] }).blockExplorerUrls, ['https://kairos.kaiascan.io']);
        assert.equal(parseChainId('0x7a69'), 31337);
        assert.equal(utf8Hex('é'), '0xc3a9');

        const record = { id: 't1', created_at: '2026-12-05T10:00:05Z', tx_hash: '0xAB', from_address: me,
                         to_address: typed.message.to, amount: '2.5' };
        const events = [
          { tx_hash: '0xab', from_address: me, to_address: typed.message.to, value: '2.5', block_time: '2026-12-05T10:00:07Z' },
          { tx_hash: '0xcd', from_address: '0x0000000000000000000000000000000000000000', to_address: me, value: '50', block_time: '2026-12-05T09:00:00Z' },
        ];
        const rows = mergeMovements([record], events, me);
        assert.deepEqual(rows.map((r) => r.kind), ['transfer', 'chain']);  // the transfer once, then the mint
        assert.equal(rows[1].event.value, '50');
        """
    )
