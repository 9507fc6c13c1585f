// Builds tests/data/kaia/caver-js-placeholder-vectors.json: sender-signed fee-delegated transactions as
// caver-js emits them (with its placeholder fee payer: the zero address and signatures [[0x01, 0x, 0x]]),
// and what caver-js makes of them once our fee payer signs.
//
// Documentation only: the test suite reads the JSON and never runs this. To regenerate, in a temporary
// folder OUTSIDE the repository (never add caver-js to package.json):
//
//   mkdir /tmp/caverjs && cd /tmp/caverjs && npm init -y
//   # caver-js 1.12.2 depends on the npm security placeholder `http@0.0.1-security`, which the registry no
//   # longer serves; Node's built-in `http` module wins over node_modules anyway, so map it to stream-http:
//   npm pkg set 'overrides.http=npm:stream-http@3.2.0'
//   npm install caver-js@1.12.2
//   NODE_PATH=$PWD/node_modules node /path/to/repo/tests/data/kaia/make_caver_placeholder_vectors.js \
//     > /path/to/repo/tests/data/kaia/caver-js-placeholder-vectors.json
//
// No node is contacted: nonce, gas price and chain id are all given, so caver-js fills nothing in.
"use strict";

const Caver = require("caver-js");

const caver = new Caver();
// The Kaia docs' published example keys (public, test only).
const SENDER_KEY = "0x45a915e4d060149eb4365960e6a7a45f334393093061116b197e3240065ff2d8";
const FEE_PAYER_KEY = "0xb9d5558443585bca6f225b935950e3f6e69f9da8a5809a83f51c3365dff53936";
const sender = caver.wallet.keyring.createFromPrivateKey(SENDER_KEY);
const feePayer = caver.wallet.keyring.createFromPrivateKey(FEE_PAYER_KEY);
caver.wallet.add(sender);
caver.wallet.add(feePayer);

const TOKEN = "0x7b65b75d204abed71587c9e519a89277766ee1d0"; // any contract address; tests allow-list it
const RECIPIENT = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
// transfer(address,uint256) of 1 coin (10^18) to RECIPIENT
const TRANSFER_INPUT = caver.abi.encodeFunctionCall(
  {
    name: "transfer",
    type: "function",
    inputs: [
      { type: "address", name: "to" },
      { type: "uint256", name: "amount" },
    ],
  },
  [RECIPIENT, "1000000000000000000"],
);

const CASES = [
  { kind: "feeDelegatedSmartContractExecution", type: 0x31, chainId: 1001 },
  { kind: "feeDelegatedSmartContractExecution", type: 0x31, chainId: 8217 },
  { kind: "feeDelegatedSmartContractExecution", type: 0x31, chainId: 31337 }, // anvil: the relay route test
  { kind: "feeDelegatedValueTransfer", type: 0x09, chainId: 1001 },
  { kind: "feeDelegatedValueTransfer", type: 0x09, chainId: 8217 },
];

function fields(c) {
  const common = {
    from: sender.address,
    nonce: 7,
    gas: 100000,
    gasPrice: "25000000000",
    chainId: c.chainId,
  };
  if (c.type === 0x31) return { ...common, to: TOKEN, value: 0, input: TRANSFER_INPUT };
  return { ...common, to: RECIPIENT, value: "1000000000000000" };
}

async function vector(c) {
  const f = fields(c);
  const tx = caver.transaction[c.kind].create(f);
  await caver.wallet.sign(sender.address, tx);
  const senderRaw = tx.getRLPEncoding();

  // What a fee payer service does with it in caver-js: decode, name itself, sign.
  const forPayer = caver.transaction[c.kind].decode(senderRaw);
  forPayer.chainId = c.chainId;
  forPayer.feePayer = feePayer.address;
  await caver.wallet.signAsFeePayer(feePayer.address, forPayer);

  return {
    id: `caver-js-placeholder-0x${c.type.toString(16)}-${c.chainId}`,
    chainId: c.chainId,
    typeByte: c.type,
    tx: {
      type: c.type,
      nonce: f.nonce,
      gasPrice: Number(f.gasPrice),
      gas: f.gas,
      to: f.to,
      value: String(f.value),
      from: sender.address,
      input: f.input || "0x",
    },
    senderPrivateKey: SENDER_KEY,
    feePayerPrivateKey: FEE_PAYER_KEY,
    feePayerAddress: feePayer.address,
    // What decoding senderSignedRaw must give (as ethers-ext reads it): the sender's fields and signature,
    // no fee payer at all; re-encoded, the short sender-signed form whose keccak is senderTxHash.
    expectedDecoding: {
      sender: sender.address,
      signer: sender.address,
      feePayer: null,
      feePayerSignatures: [],
    },
    caver: {
      // tx.getRLPEncoding() after caver.wallet.sign: what a caver-js wallet hands to a fee payer
      senderSignedRaw: senderRaw,
      placeholderFeePayer: tx.feePayer,
      placeholderFeePayerSignatures: sigs(tx.feePayerSignatures),
      senderSignatures: sigs(tx.signatures),
      senderTxHash: tx.getSenderTxHash(),
      // keccak of the raw above, placeholder included: a hash no node will ever report
      placeholderTxHash: tx.getTransactionHash(),
      // after caver.wallet.signAsFeePayer with FEE_PAYER_KEY
      feePayerSignedRaw: forPayer.getRLPEncoding(),
      feePayerSignatures: sigs(forPayer.feePayerSignatures),
      txHash: forPayer.getTransactionHash(),
      feePayerSenderTxHash: forPayer.getSenderTxHash(),
    },
  };
}

// caver-js keeps signatures as SignatureData objects; written out as [v, r, s] hex lists
const sigs = (list) => list.map((s) => [s.v, s.r, s.s]);

(async () => {
  const vectors = [];
  for (const c of CASES) vectors.push(await vector(c));
  const out = {
    _meta: {
      what:
        "Sender-signed fee-delegated transactions as caver-js emits them: with a placeholder fee payer " +
        "(zero address, signatures [[0x01, 0x, 0x]]). Kaia's ethers-ext treats that placeholder as no " +
        "fee payer; wallet.kaia does the same. feePayerSignedRaw/txHash: caver-js's own fee payer signing.",
      generator: "tests/data/kaia/make_caver_placeholder_vectors.js (not run by the suite)",
      "caver-js": require("caver-js/package.json").version,
      node: process.version,
    },
    vectors,
  };
  process.stdout.write(JSON.stringify(out, null, 2) + "\n");
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
