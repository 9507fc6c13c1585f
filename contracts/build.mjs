#!/usr/bin/env node
// Compile contracts/src/**/*.sol with the pinned solc-js and write one artefact per deployable contract to
// contracts/build/<ContractName>.json.
//
//   node contracts/build.mjs           compile and (re)write the artefacts
//   node contracts/build.mjs --check   compile in memory; exit 1 naming every artefact that differs
//
// Output is deterministic (sorted keys, 2-space indent, trailing newline), so a committed artefact either
// equals what the sources produce or `--check` says which one is stale.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const CONTRACTS_DIR = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(CONTRACTS_DIR);
const SRC_DIR = path.join(CONTRACTS_DIR, "src");
const BUILD_DIR = path.join(CONTRACTS_DIR, "build");
const NODE_MODULES = path.join(ROOT, "node_modules");
const SRC_PREFIX = "contracts/src/";

// The settings are part of every artefact. Cancun: supported by Kaia mainnet and Kairos, and pinned so a
// compiler default change (0.8.30 defaults to prague) cannot change the bytecode.
const SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  outputSelection: {
    "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"] },
  },
};

function toPosix(p) {
  return p.split(path.sep).join("/");
}

function listSolidityFiles(dir) {
  const found = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...listSolidityFiles(full));
    else if (entry.isFile() && entry.name.endsWith(".sol")) found.push(full);
  }
  return found.sort();
}

// Source unit names: "contracts/src/..." for ours, "@scope/pkg/..." for node_modules packages. Keeping
// them relative to the repository makes the metadata (and so the bytecode) independent of the checkout.
function readImport(sourceUnitName) {
  if (sourceUnitName.startsWith(SRC_PREFIX)) {
    return readFileSync(path.join(ROOT, sourceUnitName), "utf8");
  }
  const resolved = path.resolve(NODE_MODULES, sourceUnitName);
  if (!resolved.startsWith(NODE_MODULES + path.sep)) {
    throw new Error(`import escapes node_modules: ${sourceUnitName}`);
  }
  return readFileSync(resolved, "utf8");
}

function compile() {
  const sources = {};
  for (const file of listSolidityFiles(SRC_DIR)) {
    const name = toPosix(path.relative(ROOT, file));
    sources[name] = { content: readFileSync(file, "utf8") };
  }
  if (Object.keys(sources).length === 0) throw new Error(`no .sol files under ${SRC_DIR}`);

  const loaded = {}; // every source unit the compiler asked for, for the source hash
  for (const [name, { content }] of Object.entries(sources)) loaded[name] = content;
  const findImports = (sourceUnitName) => {
    try {
      const contents = readImport(sourceUnitName);
      loaded[sourceUnitName] = contents;
      return { contents };
    } catch (err) {
      return { error: `cannot resolve import ${sourceUnitName}: ${err.message}` };
    }
  };

  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));

  const diagnostics = output.errors ?? [];
  const errors = diagnostics.filter((d) => d.severity === "error");
  for (const d of diagnostics.filter((d) => d.severity !== "error")) {
    process.stderr.write(`solc ${d.severity}: ${d.formattedMessage ?? d.message}\n`);
  }
  if (errors.length > 0) {
    for (const d of errors) process.stderr.write(`solc error: ${d.formattedMessage ?? d.message}\n`);
    throw new Error(`compilation failed with ${errors.length} error(s)`);
  }
  return { output, loaded };
}

// sha256 over the sorted source units the contract was compiled from (ours and the library's): for each,
// its name, a NUL, its UTF-8 byte length, a NUL, its contents.
function sourceHash(unitNames, loaded) {
  const hash = createHash("sha256");
  for (const name of [...unitNames].sort()) {
    const content = loaded[name];
    if (content === undefined) throw new Error(`source ${name} was not loaded`);
    hash.update(`${name}\0${Buffer.byteLength(content, "utf8")}\0`);
    hash.update(content, "utf8");
  }
  return `0x${hash.digest("hex")}`;
}

function artefacts() {
  const { output, loaded } = compile();
  const result = new Map();
  for (const [unit, contracts] of Object.entries(output.contracts ?? {})) {
    if (!unit.startsWith(SRC_PREFIX)) continue; // library contracts are never deployed on their own
    for (const [contractName, c] of Object.entries(contracts)) {
      const bytecode = c.evm.bytecode.object;
      if (!bytecode) continue; // interfaces and abstract contracts
      if (result.has(contractName)) {
        throw new Error(`contract name ${contractName} is defined twice (${result.get(contractName).unit}, ${unit})`);
      }
      const metadata = JSON.parse(c.metadata);
      result.set(contractName, {
        unit,
        artefact: {
          contractName,
          abi: c.abi,
          bytecode: `0x${bytecode}`,
          deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
          compiler: solc.version(),
          settings: SETTINGS,
          sourceHash: sourceHash(Object.keys(metadata.sources), loaded),
        },
      });
    }
  }
  return result;
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortKeys(value[k])]),
    );
  }
  return value;
}

function serialise(artefact) {
  return `${JSON.stringify(sortKeys(artefact), null, 2)}\n`;
}

// Artefacts this script wrote earlier (they carry a sourceHash) whose contract no longer exists.
function orphans(current) {
  if (!existsSync(BUILD_DIR)) return [];
  return readdirSync(BUILD_DIR)
    .filter((f) => f.endsWith(".json") && !current.has(f.slice(0, -".json".length)))
    .filter((f) => {
      try {
        return "sourceHash" in JSON.parse(readFileSync(path.join(BUILD_DIR, f), "utf8"));
      } catch {
        return false;
      }
    });
}

function main(argv) {
  const check = argv.includes("--check");
  const built = artefacts();
  const rel = (f) => toPosix(path.relative(ROOT, path.join(BUILD_DIR, f)));

  if (check) {
    const stale = [];
    for (const [name, { artefact }] of built) {
      const file = path.join(BUILD_DIR, `${name}.json`);
      if (!existsSync(file)) stale.push(`${rel(`${name}.json`)} is missing`);
      else if (readFileSync(file, "utf8") !== serialise(artefact)) {
        stale.push(`${rel(`${name}.json`)} differs from what the sources produce`);
      }
    }
    for (const f of orphans(built)) stale.push(`${rel(f)} has no contract in contracts/src`);
    if (stale.length > 0) {
      process.stderr.write(`stale contract artefacts:\n${stale.map((s) => `  ${s}\n`).join("")}`);
      process.stderr.write("run `node contracts/build.mjs` and commit contracts/build/\n");
      return 1;
    }
    process.stdout.write(`${built.size} contract artefacts are up to date (solc ${solc.version()})\n`);
    return 0;
  }

  mkdirSync(BUILD_DIR, { recursive: true });
  for (const [name, { artefact }] of built) {
    const file = path.join(BUILD_DIR, `${name}.json`);
    const text = serialise(artefact);
    const changed = !existsSync(file) || readFileSync(file, "utf8") !== text;
    if (changed) writeFileSync(file, text);
    process.stdout.write(`${changed ? "wrote" : "unchanged"} ${rel(`${name}.json`)}\n`);
  }
  for (const f of orphans(built)) {
    rmSync(path.join(BUILD_DIR, f));
    process.stdout.write(`removed ${rel(f)} (no such contract any more)\n`);
  }
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`contracts/build.mjs: ${err.message}\n`);
  process.exitCode = 1;
}
