#!/usr/bin/env node
// Rebuilds contracts/artifacts/*.json from the Solidity sources, offline, with the
// solc-js compiler pinned in tools/anvil/package.json (`npm ci --prefix tools/anvil`).
// Run: node contracts/build.js        (writes the artifacts)
//      node contracts/build.js --check (exits 1 when the committed artifacts differ)
'use strict';
const fs = require('fs');
const path = require('path');

const here = __dirname;
const solc = require(path.join(here, '..', 'tools', 'anvil', 'node_modules', 'solc'));
// test/ holds helpers for the tests only; they are never deployed.
const sources = [
  'PaymentRouter.sol',
  'WrappedBTC.sol',
  'ReserveFeed.sol',
  'SecureWrappedBTC.sol',
  'test/BatchPayer.sol',
  'test/ReserveConsumer.sol',
];

const input = {
  language: 'Solidity',
  sources: Object.fromEntries(
    sources.map((f) => [f, { content: fs.readFileSync(path.join(here, f), 'utf8') }]),
  ),
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: 'cancun',
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

const check = process.argv.includes('--check');
let differs = false;
for (const file of sources) {
  for (const [name, c] of Object.entries(output.contracts[file])) {
    // Interfaces have no code to deploy (and two files may declare the same one).
    if (c.evm.bytecode.object === '') continue;
    const artifact = {
      contractName: name,
      sourceName: file,
      compiler: `solc ${solc.version()}`,
      abi: c.abi,
      bytecode: '0x' + c.evm.bytecode.object,
    };
    const text = JSON.stringify(artifact, null, 2) + '\n';
    const out = path.join(here, 'artifacts', `${name}.json`);
    if (check) {
      const old = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
      if (old !== text) {
        console.error(`${out} is out of date: run node contracts/build.js`);
        differs = true;
      }
    } else {
      fs.writeFileSync(out, text);
      console.log(`wrote ${path.relative(process.cwd(), out)}`);
    }
  }
}
process.exit(differs ? 1 : 0);
