// Browser test of the public dashboard against a running `ubtc demo`:
//   node tests/e2e/dashboard.mjs BASE_URL --bundle-out FILE [--screenshots DIR]
// Run by crates/ubtc/tests/dashboard_e2e.rs, which starts the demo and then checks
// with `ubtc verify` the bundle this script downloads through the page. Exits 0 and
// prints `E2E OK {json}` when every check passed; otherwise prints `E2E FAIL …`
// and exits 1. Headless Chromium is Debian's /usr/bin/chromium (or $CHROMIUM).
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
const base = args[0];
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const bundleOut = opt('--bundle-out');
const shots = opt('--screenshots');
if (!base || !bundleOut) {
  console.error('usage: node dashboard.mjs BASE_URL --bundle-out FILE [--screenshots DIR]');
  process.exit(2);
}
const PAGE_BUDGET_BYTES = 100 * 1024;
const summary = {};

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function api(p, init) {
  const r = await fetch(base + p, init);
  const body = await r.json();
  if (!r.ok) throw new Error(`${p}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

// An implementation independent of the page's: BigInt arithmetic, then grouping.
function formatUnits(baseUnits, decimals) {
  const v = BigInt(baseUnits);
  const scale = 10n ** BigInt(decimals);
  const whole = (v / scale).toLocaleString('en-US');
  const frac = (v % scale).toString().padStart(decimals, '0');
  return decimals === 0 ? v.toString() : `${whole}.${frac}`;
}

async function until(what, fn, ms = 30000, every = 250) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out: ${what}${last ? ` (${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // The tests run as root in a container, where Chromium's sandbox cannot start.
  args: ['--no-sandbox'],
});
const problems = [];
function watch(page) {
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
}

try {
  // ---- first load: weight, headers, figures ----
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await desktop.newPage();
  watch(page);
  const loaded = [];
  page.on('requestfinished', (req) => loaded.push(req));
  const first = await page.goto(base + '/', { waitUntil: 'load' });
  check(first.status() === 200, `GET / answered ${first.status()}`);
  const h = first.headers();
  check(/script-src 'self'/.test(h['content-security-policy'] || '') && !/unsafe-inline/.test(h['content-security-policy']),
    `CSP without inline script: ${h['content-security-policy']}`);
  check(h['content-encoding'] === 'gzip', 'the page is sent gzipped');
  await page.waitForSelector('#chart-ratio[data-points]', { timeout: 20000 });
  let bytes = 0;
  const counted = [];
  for (const req of loaded) {
    // Chart data is outside the budget (the issue's rule).
    if (req.url().includes('/v1/reserves/history')) continue;
    const s = await req.sizes();
    bytes += s.responseBodySize + s.responseHeadersSize;
    counted.push(`${new URL(req.url()).pathname} ${s.responseBodySize + s.responseHeadersSize}`);
  }
  summary.first_page_bytes = bytes;
  summary.first_page_requests = counted.length;
  check(bytes > 0 && bytes < PAGE_BUDGET_BYTES, `first page weighs ${bytes} bytes: ${counted.join(', ')}`);
  const assetHeaders = (await page.request.get(base + (await page.getAttribute('script[src]', 'src')))).headers();
  check(/immutable/.test(assetHeaders['cache-control'] || ''), 'hashed script is immutable');

  // The page shows what /v1/reserves says (compared on the same snapshot).
  const reserves = await until('page and API on the same snapshot', async () => {
    const r = await api('/v1/reserves');
    const asOf = await page.getAttribute('#ratio', 'data-as-of');
    return r.snapshot && asOf === r.snapshot.as_of ? r : null;
  }, 30000, 500);
  const s = reserves.snapshot;
  const ratioText = (await page.textContent('[data-testid=ratio]')).trim();
  check(ratioText === s.ratio, `ratio on page ${ratioText} vs API ${s.ratio}`);
  const word = s.stale ? 'stale' : s.healthy ? 'healthy' : 'unhealthy';
  const statusText = (await page.textContent('[data-testid=status]')).trim();
  check(statusText === word, `status on page ${statusText} vs API ${word}`);
  check((await page.textContent('[data-testid=reserve-btc]')).trim() === `${formatUnits(s.reserve_sats, 8)} BTC`, 'reserve BTC');
  check((await page.textContent('[data-testid=supply-btc]')).trim() === `${formatUnits(s.supply_sats, 8)} uBTC`, 'total supply');
  check(s.supply.length > 0, 'the demo has supply figures');
  for (const e of s.supply) {
    const cell = (await page.textContent(`[data-testid="supply-${e.chain}"]`)).trim();
    check(cell === formatUnits(e.supply_base_units, e.decimals), `supply on ${e.chain}: page ${cell} vs API ${e.supply_base_units}`);
  }
  check((await page.textContent('#btc-block')).includes(String(s.bitcoin_height)), 'Bitcoin block shown');
  // The signed reserve registry's current version and fingerprint, as the API serves it.
  const registry = await api('/v1/reserves/registry');
  check(registry.current_version >= 1 && /^[0-9a-f]{64}$/.test(registry.current_fingerprint), 'the demo published a registry version');
  await until('registry shown', async () => (await page.getAttribute('#registry', 'data-fingerprint')) || null, 10000, 250);
  check((await page.getAttribute('#registry', 'data-fingerprint')) === registry.current_fingerprint, 'registry fingerprint on page vs API');
  check((await page.textContent('#registry')).includes(registry.current_fingerprint), 'registry fingerprint visible');
  check((await page.getAttribute('#registry', 'data-version')) === String(registry.current_version), 'registry version on page vs API');
  // Each reserve address's balance on the page is the one /v1/reserves gives for the
  // same snapshot, with its explorer link; together they make the reserve total.
  check(reserves.addresses.length >= 2, `the test registers a second reserve address (${reserves.addresses.length})`);
  let addrSum = 0n;
  for (const a of reserves.addresses) {
    check(a.balance_sats !== null && a.utxos !== null, `${a.address} counted in the snapshot`);
    const row = `#addresses tr[data-address="${a.address}"]`;
    const cell = (await page.textContent(`${row} [data-testid=balance]`)).trim();
    check(cell === formatUnits(a.balance_sats, 8), `balance of ${a.address}: page ${cell} vs API ${a.balance_sats}`);
    check((await page.getAttribute(`${row} [data-testid=balance]`, 'data-sats')) === a.balance_sats, `exact sats of ${a.address}`);
    const href = await page.getAttribute(`${row} td.addr a`, 'href');
    check(href === `https://mempool.space/testnet4/address/${encodeURIComponent(a.address)}`, `explorer link of ${a.address}: ${href}`);
    addrSum += BigInt(a.balance_sats);
  }
  const snapSum = s.addresses.reduce((t, b) => t + BigInt(b.balance_sats), 0n);
  check(addrSum === BigInt(s.reserve_sats) && snapSum === addrSum, `address balances add up to the reserve (${addrSum} vs ${s.reserve_sats})`);
  check(BigInt(s.reserve_sats) > 0n, 'the demo reserve holds bitcoin');
  summary.addresses = reserves.addresses.map((a) => `${a.address}=${a.balance_sats}`);
  summary.ratio = s.ratio;
  summary.status = word;

  // ---- chart: points for the chosen ranges ----
  async function chartMatches(label) {
    const attrs = await page.$eval('#chart-ratio', (n) => ({
      points: Number(n.getAttribute('data-points')), from: n.getAttribute('data-from'),
      to: n.getAttribute('data-to'), bucket: n.getAttribute('data-bucket'),
    }));
    const hist = await api(`/v1/reserves/history?from=${attrs.from}&to=${attrs.to}&bucket=${attrs.bucket}`);
    check(attrs.points === hist.points.length, `${label}: chart has ${attrs.points} points, API ${hist.points.length}`);
    check(attrs.points > 0, `${label}: no points to draw`);
    // Pixels in the ratio line's colour (#0b57a4) exist only if the series was drawn.
    // uPlot draws on the next animation frame: retry for a moment.
    const drawn = await until(`${label}: pixels in the ratio colour`, () => page.$eval('#chart-ratio canvas', (c) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (Math.abs(d[i] - 11) < 30 && Math.abs(d[i + 1] - 87) < 30 && Math.abs(d[i + 2] - 164) < 30 && d[i + 3] > 200) n++;
      }
      return n;
    }), 5000);
    return { points: attrs.points, bucket: attrs.bucket, pixels: drawn };
  }
  summary.chart_24h = await chartMatches('24 h');
  await page.check('input[name=range][value="30d"]');
  await page.waitForSelector('#chart-ratio[data-bucket=hour]');
  summary.chart_30d = await chartMatches('30 d');
  await page.check('input[name=range][value="custom"]');
  const iso = (ms) => new Date(ms).toISOString().slice(0, 16);
  await page.fill('#range-from', iso(Date.now() - 3 * 3600e3));
  await page.fill('#range-to', iso(Date.now() + 60e3));
  await page.click('#custom-range button');
  await page.waitForSelector('#chart-ratio[data-bucket=minute]');
  summary.chart_custom = await chartMatches('custom');
  await page.check('input[name=range][value="24h"]');
  await page.waitForSelector('#chart-ratio[data-bucket=minute]');

  // ---- a payment made now appears in the feed, its page offers a bundle ----
  const message = `e2e ${Date.now().toString(36)}`;
  const receipt = await api('/v1/demo/payments', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ chain: 'dev', message }),
  });
  const item = page.locator('#feed li', { hasText: message });
  await item.waitFor({ timeout: 60000 });
  summary.feed_status_first_seen = await item.getAttribute('data-status');
  // The feed follows the validation to `signed` without a reload…
  await page.locator('#feed li[data-status=signed]', { hasText: message }).waitFor({ timeout: 90000 });
  // …and the guardians that signed it show as answering (2-of-3 in the demo).
  const answering = await until('two guardians answering', async () => {
    const n = await page.locator('#guardians li', { hasText: 'answering' }).count();
    return n >= 2 ? n : null;
  }, 20000, 500);
  summary.guardians_answering = answering;
  if (shots) {
    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: path.join(shots, 'dashboard-desktop.png'), fullPage: true });
  }
  await item.locator('a').click();
  await page.waitForURL(/\/validations\//);
  const id = page.url().split('/validations/')[1];
  await page.waitForSelector('#proof-card:not([hidden])', { timeout: 90000 });
  await page.waitForSelector('#signatures tbody tr');
  const v = await api(`/v1/validations/${id}`);
  check(v.payment.tx_hash === receipt.tx_hash, 'the feed linked the payment made');
  check((await page.textContent('[data-testid=statement]')) === v.statement, 'statement shown verbatim');
  const cmd = await page.textContent('[data-testid=verify-cmd]');
  check(cmd.includes(`/v1/proofs/${id}`) && cmd.includes('ubtc verify '), `verify command: ${cmd}`);
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#bundle-link')]);
  await download.saveAs(bundleOut);
  summary.validation = id;
  summary.suggested_filename = download.suggestedFilename();
  if (shots) await page.screenshot({ path: path.join(shots, 'validation-desktop.png'), fullPage: true });

  // ---- lookup by transaction hash ----
  await page.fill('#lookup-tx', receipt.tx_hash);
  await page.press('#lookup-tx', 'Enter');
  await page.waitForURL(/\?tx=/);
  await page.locator(`#lookup-result li[data-id="${id}"]`).waitFor({ timeout: 30000 });
  await page.fill('#lookup-tx', 'not-a-hash!');
  await page.press('#lookup-tx', 'Enter');
  await page.locator('#lookup-result .error', { hasText: 'invalid_parameter' }).waitFor({ timeout: 30000 });

  // ---- phone ----
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true });
  const p2 = await phone.newPage();
  watch(p2);
  await p2.goto(base + '/');
  await p2.waitForSelector('#chart-ratio[data-points]');
  await p2.locator('#feed li', { hasText: message }).waitFor({ timeout: 20000 });
  const overflow = await p2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the phone page scrolls sideways by ${overflow}px`);
  if (shots) await p2.screenshot({ path: path.join(shots, 'dashboard-phone.png'), fullPage: true });

  check(problems.length === 0, problems.join('; '));
  console.log('E2E OK ' + JSON.stringify(summary));
  await browser.close();
} catch (e) {
  console.log('E2E FAIL ' + e.message + (problems.length ? ` [${problems.join('; ')}]` : ''));
  console.log('summary so far ' + JSON.stringify(summary));
  await browser.close();
  process.exit(1);
}
