// Compiles contracts/src and contracts/test with the pinned solcjs into artifacts/<Name>.json
// (ABI and creation bytecode), the files the Rust bindings and the embedded chain load.
// `node build.mjs --check` compiles and exits 1 when a committed artifact differs.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");
const here = path.dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes("--check");
const outDir = path.join(here, "artifacts");

// Settings are part of the artifacts: changing one makes them stale.
const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  metadata: { bytecodeHash: "none" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
};

const sources = {};
for (const dir of ["src", "test"]) {
  for (const f of fs.readdirSync(path.join(here, dir)).sort()) {
    if (f.endsWith(".sol")) sources[`${dir}/${f}`] = { content: fs.readFileSync(path.join(here, dir, f), "utf8") };
  }
}

function findImports(p) {
  const full = path.join(here, "node_modules", p);
  if (!full.startsWith(path.join(here, "node_modules"))) return { error: `import outside node_modules: ${p}` };
  try {
    return { contents: fs.readFileSync(full, "utf8") };
  } catch {
    return { error: `not found: ${p}` };
  }
}

const out = JSON.parse(
  solc.compile(JSON.stringify({ language: "Solidity", sources, settings }), { import: findImports }),
);
const errors = (out.errors || []).filter((e) => e.severity === "error");
for (const e of out.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

const artifacts = {};
for (const [file, contracts] of Object.entries(out.contracts)) {
  if (!(file.startsWith("src/") || file.startsWith("test/"))) continue;
  for (const [name, c] of Object.entries(contracts)) {
    if (!c.evm.bytecode.object) continue; // interfaces and abstract contracts
    artifacts[`${name}.json`] =
      JSON.stringify(
        { contractName: name, sourceName: file, compiler: solc.version(), abi: c.abi, bytecode: "0x" + c.evm.bytecode.object },
        null,
        2,
      ) + "\n";
  }
}

if (check) {
  const stale = [];
  const committed = fs.existsSync(outDir) ? fs.readdirSync(outDir).filter((f) => f.endsWith(".json")) : [];
  for (const [f, text] of Object.entries(artifacts)) {
    const p = path.join(outDir, f);
    if (!fs.existsSync(p) || fs.readFileSync(p, "utf8") !== text) stale.push(f);
  }
  for (const f of committed) if (!(f in artifacts)) stale.push(`${f} (no longer built)`);
  if (stale.length) {
    console.error(`stale contract artifacts (run: node contracts/build.mjs): ${stale.join(", ")}`);
    process.exit(1);
  }
  console.log(`${Object.keys(artifacts).length} contract artifacts fresh`);
} else {
  fs.mkdirSync(outDir, { recursive: true });
  for (const f of fs.readdirSync(outDir)) if (f.endsWith(".json") && !(f in artifacts)) fs.unlinkSync(path.join(outDir, f));
  for (const [f, text] of Object.entries(artifacts)) fs.writeFileSync(path.join(outDir, f), text);
  console.log(`wrote ${Object.keys(artifacts).length} artifacts to ${outDir}`);
}
