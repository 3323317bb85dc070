#!/usr/bin/env node
// Cross-verifier for ubtc-bitcoin's tests: verifies signatures with libraries written
// by others. Reads a JSON array of cases on stdin:
//   {"verifier": "bip322-js" | "bitcoinjs-message", "address": "...",
//    "message": "...", "signature": "..."}
// and prints a JSON array of {"ok": bool, "error"?: string}, one per case, in order.
// A case {"sign": "bip322-js", "wif": "...", "address": "...", "message": "..."} instead
// signs with bip322-js and returns {"ok": true, "signature": "..."}, so that our
// verifier can be checked against signatures made by others too.
// bip322-js 3.0.0 predates the 2026 prefixes: callers pass the bare base64.
'use strict';

const { Verifier } = require('bip322-js');
const bitcoinMessage = require('bitcoinjs-message');

function check(c) {
  try {
    if (c.sign === 'bip322-js') {
      const { Signer } = require('bip322-js');
      const sig = Signer.sign(c.wif, c.address, c.message);
      return { ok: true, signature: Buffer.isBuffer(sig) ? sig.toString('base64') : String(sig) };
    }
    switch (c.verifier) {
      case 'bip322-js':
        return { ok: Verifier.verifySignature(c.address, c.message, c.signature) === true };
      case 'bitcoinjs-message':
        return { ok: bitcoinMessage.verify(c.message, c.address, c.signature) === true };
      default:
        return { ok: false, error: `unknown verifier ${c.verifier}` };
    }
  } catch (e) {
    return { ok: false, error: String(e && e.message ? e.message : e) };
  }
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const cases = JSON.parse(input);
  process.stdout.write(JSON.stringify(cases.map(check)));
});
