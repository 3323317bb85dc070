// Browser test of the admin interface at /admin against a running `ubtc demo`:
//   node tests/e2e/admin.mjs BASE_URL [--screenshots DIR]
// Accounts come from the environment (made by crates/ubtc/tests/dashboard_e2e.rs with
// `ubtc admin create-user`, so none has a second factor yet): E2E_ADMIN_USER /
// _PASSWORD, E2E_AUDITOR_USER / _PASSWORD, E2E_OPERATOR_USER / _PASSWORD (the initial
// passwords). Each enrols at its first login here, reading the secret off the page.
// Prints `E2E OK {json}` or `E2E FAIL …`.
import { chromium } from 'playwright-core';
import { createHmac } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
const base = args[0];
const i = args.indexOf('--screenshots');
const shots = i >= 0 ? args[i + 1] : undefined;
const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
// `totp` (the base32 secret) is learnt at enrolment; `password` becomes the user's own.
const admin = { user: env('E2E_ADMIN_USER'), password: env('E2E_ADMIN_PASSWORD') };
const auditor = { user: env('E2E_AUDITOR_USER'), password: env('E2E_AUDITOR_PASSWORD') };
const operator = { user: env('E2E_OPERATOR_USER'), password: env('E2E_OPERATOR_PASSWORD') };
const summary = {};

function check(cond, what) {
  if (!cond) throw new Error(what);
}

// RFC 6238 (SHA-1, 30 s, 6 digits) written here from the RFC, independent of the
// server's implementation.
function base32(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of s.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const out = [];
  for (let j = 0; j + 8 <= bits.length; j += 8) out.push(parseInt(bits.slice(j, j + 8), 2));
  return Buffer.from(out);
}
function totp(secret, at = Date.now()) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / 30)));
  const mac = createHmac('sha1', base32(secret)).update(counter).digest();
  const o = mac[mac.length - 1] & 0xf;
  const n = ((mac[o] & 0x7f) << 24) | (mac[o + 1] << 16) | (mac[o + 2] << 8) | mac[o + 3];
  return String(n % 1e6).padStart(6, '0');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
const problems = [];
function watch(page) {
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
}

async function login(page, who, withTotp) {
  await page.fill('#login-form [name=username]', who.user);
  await page.fill('#login-form [name=password]', who.password);
  await page.fill('#login-form [name=totp]', withTotp ? totp(who.totp) : '');
  await page.click('#login-form button[type=submit]');
}

// First login: the password alone leads to the enrolment screen (no session yet);
// the secret shown there is the user's, confirmed with a code and a new password.
async function enrol(page, ctx, who) {
  await login(page, who, false);
  await page.waitForSelector('#enrol:not([hidden])', { timeout: 30000 });
  check(await page.isHidden('#app'), 'no admin view before enrolment');
  check((await ctx.cookies()).every((c) => !c.name.startsWith('ubtc_admin_access')), 'no session cookie before enrolment');
  who.totp = (await page.textContent('#enrol-secret')).trim();
  check(/^[A-Z2-7]{32}$/.test(who.totp), `secret shown: ${who.totp}`);
  check((await page.textContent('#enrol-uri')).includes(`secret=${who.totp}`), 'otpauth URI carries the secret');
  const initial = who.password;
  who.password = initial + ' (mine)';
  // The initial password again is refused: the user must choose their own.
  await page.fill('#enrol-form [name=totp]', totp(who.totp));
  await page.fill('#enrol-form [name=new_password]', initial);
  await page.click('#enrol-form button[type=submit]');
  await page.locator('#error', { hasText: 'invalid_parameter' }).waitFor({ timeout: 30000 });
  await page.fill('#enrol-form [name=totp]', totp(who.totp));
  await page.fill('#enrol-form [name=new_password]', who.password);
  await page.click('#enrol-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])', { timeout: 30000 });
  check(await page.isHidden('#enrol'), 'enrolment screen gone');
  check((await page.textContent('#enrol-secret')) === '', 'the secret is cleared from the page');
}

// The code of the next TOTP step (the current one was used to enrol, and a step
// logs in once): waits for it.
async function nextStep(page) {
  const wait = 30000 - (Date.now() % 30000) + 500;
  await page.waitForTimeout(wait);
}

// A call from inside the page, as the page's own script would make it (same origin,
// session header), with or without the CSRF token.
function pageCall(page, method, url, body, withCsrf) {
  return page.evaluate(async ([method, url, body, withCsrf]) => {
    const m = /(?:^|;\s*)ubtc_admin_csrf=([^;]+)/.exec(document.cookie);
    const headers = { 'content-type': 'application/json', 'x-ubtc-session': 'cookie' };
    if (withCsrf && m) headers['x-csrf-token'] = m[1];
    const r = await fetch(url, { method, headers, body: body ? JSON.stringify(body) : undefined });
    return { status: r.status, body: await r.text() };
  }, [method, url, body, withCsrf]);
}

try {
  // ---- admin: without TOTP refused, with TOTP in ----
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  watch(page);
  const res = await page.goto(base + '/admin');
  check(res.status() === 200, `/admin answered ${res.status()}`);
  check(/script-src 'self'/.test(res.headers()['content-security-policy'] || ''), 'CSP on /admin');
  await page.waitForSelector('#login:not([hidden])');
  await enrol(page, ctx, admin);
  summary.enrolment = 'first login';
  await page.click('#logout');
  await page.waitForSelector('#login:not([hidden])');
  // Enrolled: the password alone no longer opens anything.
  await login(page, admin, false);
  await page.locator('#error', { hasText: 'totp_required' }).waitFor({ timeout: 30000 });
  check(await page.isHidden('#app'), 'no admin view without TOTP');
  check(await page.isHidden('#enrol'), 'no second enrolment');
  check((await ctx.cookies()).every((c) => !c.name.startsWith('ubtc_admin_access') || !c.value), 'no session cookie without TOTP');
  summary.without_totp = 'totp_required';

  await nextStep(page);
  await login(page, admin, true);
  await page.waitForSelector('#app:not([hidden])', { timeout: 30000 });
  check((await page.textContent('#who-name')).trim() === admin.user, 'logged in as the admin');
  const cookies = await ctx.cookies();
  const access = cookies.find((c) => c.name === 'ubtc_admin_access');
  check(access && access.httpOnly && access.sameSite === 'Strict', `access cookie HttpOnly SameSite=Strict: ${JSON.stringify(access)}`);
  check(!access.secure, 'not Secure on a loopback host (plain http)');
  check(!(await page.evaluate(() => document.cookie)).includes(access.value), 'the script cannot read the token');
  summary.cookie = { httpOnly: access.httpOnly, sameSite: access.sameSite, path: access.path };

  // The admin creates an auditor through the form; the audit log records it.
  const newUser = `carol${Date.now().toString(36)}`;
  await page.fill('#user-form [name=username]', newUser);
  await page.selectOption('#user-form [name=role]', 'auditor');
  await page.fill('#user-form [name=password]', 'a long enough password 1');
  await page.click('#user-form button[type=submit]');
  await page.locator('#notice', { hasText: 'first login' }).waitFor({ timeout: 30000 });
  await page.locator(`#users tr[data-user="${newUser}"]`).waitFor();
  // The admin got no secret of the new account, on the page or from the API.
  check(!/secret|otpauth/i.test(await page.textContent('#notice')), 'no TOTP secret for the admin');
  check((await page.textContent(`#users tr[data-user="${newUser}"]`)).includes('at first login'), 'new user not enrolled yet');
  const made = await pageCall(page, 'POST', '/v1/admin/api-keys', { name: 'ops', roles: ['operator'], expires_in_secs: 3600 }, true);
  check(made.status === 403 && /role_not_grantable/.test(made.body), `admin creating an operator key: ${made.status} ${made.body}`);
  summary.admin_operator_key = made.status;
  if (shots) {
    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: path.join(shots, 'admin-home.png'), fullPage: true });
  }

  // CSRF: the same call without the token is refused and changes nothing.
  const forged = await pageCall(page, 'POST', '/v1/admin/users', { username: 'mallory', role: 'admin', password: 'another long password' }, false);
  check(forged.status === 403 && /csrf/.test(forged.body), `call without CSRF token: ${forged.status} ${forged.body}`);
  const users = JSON.parse((await pageCall(page, 'GET', '/v1/admin/users', null, false)).body);
  check(!users.items.some((u) => u.username === 'mallory'), 'the forged call created nothing');

  await page.click('.tabs a[href="#audit"]');
  await page.locator('#audit-status', { hasText: 'chain intact' }).waitFor({ timeout: 30000 });
  await page.locator('#audit tbody tr', { hasText: newUser }).first().waitFor();
  for (const tab of ['keys', 'webhooks', 'reserves']) {
    await page.click(`.tabs a[href="#${tab}"]`);
    await page.waitForSelector(`#tab-${tab}:not([hidden])`);
  }

  // Reserve addresses: the tab lists exactly the registry the API returns, active and
  // retired, the state in words. The demo's own address, the e2e seed's second one
  // and a retired one (also seeded) must all be there.
  await page.click('.tabs a[href="#addresses"]');
  await page.waitForSelector('#tab-addresses:not([hidden])');
  await page.locator('#reserve-addresses tbody tr[data-address]').first().waitFor({ timeout: 30000 });
  const registry = JSON.parse((await pageCall(page, 'GET', '/v1/admin/reserve-addresses', null, false)).body);
  const shown = await page.$$eval('#reserve-addresses tbody tr[data-address]', (rows) => rows.map((r) => ({
    address: r.getAttribute('data-address'),
    cells: Array.from(r.cells).map((c) => c.textContent.trim()),
  })));
  check(registry.items.length >= 3, `registry has ${registry.items.length} addresses`);
  check(shown.length === registry.items.length, `tab shows ${shown.length} addresses, API ${registry.items.length}`);
  registry.items.forEach((a, k) => {
    const row = shown[k];
    const state = a.retired_at ? 'retired' : 'active';
    check(row.address === a.address && row.cells[0] === a.address, `row ${k}: ${row.address} vs ${a.address}`);
    check(row.cells[1] === a.kind && row.cells[2] === (a.label || '—'), `row ${k} kind/label: ${row.cells}`);
    check(row.cells[6] === (a.descriptor || '—'), `row ${k} descriptor: ${row.cells[6]}`);
    check(row.cells[3] === state, `row ${k} (${a.address}) state ${row.cells[3]}, expected ${state}`);
    check(row.cells[5] === (a.retired_at ? a.retired_at.replace('T', ' ').replace(/\.\d+Z$/, ' UTC').replace(/Z$/, ' UTC') : '—'), `row ${k} retired time ${row.cells[5]}`);
  });
  const states = shown.map((r) => r.cells[3]);
  check(states.includes('active') && states.includes('retired'), `states shown: ${states}`);
  const reserves = JSON.parse((await pageCall(page, 'GET', '/v1/reserves', null, false)).body);
  const activeShown = shown.filter((r) => r.cells[3] === 'active').map((r) => r.address).sort();
  const counted = (reserves.addresses || []).map((a) => a.address).sort();
  check(JSON.stringify(activeShown) === JSON.stringify(counted), `active ${activeShown} vs /v1/reserves ${counted}`);
  check(await page.isHidden('#error'), `an error shown on the reserve addresses tab: ${await page.textContent('#error')}`);
  summary.reserve_addresses = { total: shown.length, active: activeShown.length, retired: shown.length - activeShown.length };
  if (shots) await page.screenshot({ path: path.join(shots, 'admin-reserve-addresses.png'), fullPage: true });
  await page.click('#logout');
  await page.waitForSelector('#login:not([hidden])');
  check((await ctx.cookies()).every((c) => !c.name.startsWith('ubtc_admin_access') || !c.value), 'logout clears the session');

  // ---- auditor: no buttons that change anything, and the API refuses them anyway ----
  const actx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const ap = await actx.newPage();
  watch(ap);
  await ap.goto(base + '/admin');
  await ap.waitForSelector('#login:not([hidden])');
  await enrol(ap, actx, auditor);
  const seen = {};
  for (const tab of ['users', 'keys', 'webhooks', 'audit', 'reserves', 'addresses']) {
    await ap.click(`.tabs a[href="#${tab}"]`);
    await ap.waitForSelector(`#tab-${tab}:not([hidden])`);
    await ap.waitForTimeout(300);
    const n = await ap.locator('.mutating').count();
    const buttons = await ap.locator(`#tab-${tab} button, #tab-${tab} form`).count();
    seen[tab] = n + buttons;
  }
  check(Object.values(seen).every((n) => n === 0), `auditor sees controls that change things: ${JSON.stringify(seen)}`);
  const refused = await pageCall(ap, 'POST', '/v1/admin/users', { username: 'eve', role: 'admin', password: 'another long password' }, true);
  check(refused.status === 403 && /forbidden/.test(refused.body), `auditor creating a user: ${refused.status} ${refused.body}`);
  const refusedHook = await pageCall(ap, 'POST', '/v1/webhooks', { url: 'https://example.org/h', secret: 'a secret of sixteen+', events: ['validation.signed'] }, true);
  check(refusedHook.status === 403, `auditor registering a webhook: ${refusedHook.status} ${refusedHook.body}`);
  const after = JSON.parse((await pageCall(ap, 'GET', '/v1/admin/users', null, false)).body);
  check(!after.items.some((u) => u.username === 'eve'), 'the refused call created nothing');
  summary.auditor = { controls: seen, create_user: refused.status, register_webhook: refusedHook.status };

  // ---- operator: the reserve-operation forms, and a clear refusal where the server
  // does not run reserve operations (the demo has no real Bitcoin backend) ----
  const octx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const op = await octx.newPage();
  watch(op);
  await op.goto(base + '/admin#reserves');
  await op.waitForSelector('#login:not([hidden])');
  await enrol(op, octx, operator);
  await op.waitForSelector('#tab-reserves:not([hidden])', { timeout: 30000 });
  const forms = await op.locator('#tab-reserves form').count();
  check(forms === 4, `operator sees ${forms} reserve forms`);
  check(await op.locator('#user-form').count() === 0, 'an operator gets no user form');
  await op.fill('#deposit-form [name=txid]', 'ab'.repeat(32));
  await op.fill('#deposit-form [name=expected_sats]', '100000');
  await op.click('#deposit-form button[type=submit]');
  const refusal = (await op.locator('#error:not([hidden])').textContent({ timeout: 30000 })).trim();
  check(/^[a-z_]+: /.test(refusal), `deposit answer shown with its code: ${refusal}`);
  check(await op.locator('#ops tbody tr', { hasText: 'ab'.repeat(32) }).count() === 0, 'the refused deposit is not listed');
  // The operator makes its own key, which expires; it sees only its own keys.
  await op.click('.tabs a[href="#keys"]');
  await op.waitForSelector('#tab-keys:not([hidden])');
  check(await op.locator('#key-form').count() === 0, 'an operator gets no admin key form');
  await op.fill('#op-key-form [name=name]', 'ops bot');
  await op.fill('#op-key-form [name=days]', '7');
  await op.click('#op-key-form button[type=submit]');
  await op.locator('#notice', { hasText: 'Operator key (shown once, expires' }).waitFor({ timeout: 30000 });
  const keyRows = await op.$$eval('#keys tbody tr[data-key]', (rows) => rows.map((r) => Array.from(r.cells).map((c) => c.textContent.trim())));
  check(keyRows.length === 1 && keyRows[0][0] === 'ops bot' && keyRows[0][4] !== 'never', `operator's keys: ${JSON.stringify(keyRows)}`);
  summary.operator = { reserve_forms: forms, deposit_answer: refusal.split(':')[0], own_keys: keyRows.length, key_expires: keyRows[0][4] };

  check(problems.length === 0, problems.join('; '));
  console.log('E2E OK ' + JSON.stringify(summary));
  await browser.close();
} catch (e) {
  console.log('E2E FAIL ' + e.message + (problems.length ? ` [${problems.join('; ')}]` : ''));
  console.log('summary so far ' + JSON.stringify(summary));
  await browser.close();
  process.exit(1);
}
