// The admin interface: a page over the admin API only (docs/admin.md). The session is
// a cookie the script cannot read (see crates/api/src/dashboard/session.rs): every
// call says `x-ubtc-session: cookie`, and every change repeats the CSRF cookie in
// `x-csrf-token`. Buttons that change something are shown only to the roles that
// may use them; the API checks the roles again whatever the page shows.
(function () {
  'use strict';

  var $ = function (id) { return document.getElementById(id); };
  var me = null;
  var RESERVE_KINDS = ['deposits', 'mints', 'burns', 'releases'];

  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === 'text') node.textContent = v;
      else if (k === 'cls') node.className = v;
      else if (k === 'onclick') node.addEventListener('click', v);
      else node.setAttribute(k, v);
    });
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return node;
  }
  function clear(n) { while (n.firstChild) n.removeChild(n.firstChild); return n; }
  function td(text, cls) { return el('td', { text: text === null || text === undefined ? '—' : String(text), cls: cls }); }
  function utc(iso) { return iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC').replace(/Z$/, ' UTC') : '—'; }
  function badge(word, cls) { return el('span', { cls: 'badge s-' + (cls || word), text: word }); }

  function csrf() {
    var m = /(?:^|;\s*)ubtc_admin_csrf=([^;]+)/.exec(document.cookie);
    return m ? m[1] : '';
  }

  function ApiError(status, code, message) { this.status = status; this.code = code; this.message = message; }

  function call(method, path, body, retried) {
    var headers = { accept: 'application/json', 'x-ubtc-session': 'cookie' };
    if (method !== 'GET') headers['x-csrf-token'] = csrf();
    if (body !== undefined) headers['content-type'] = 'application/json';
    return fetch(path, { method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' })
      .then(function (r) {
        return r.text().then(function (t) {
          var json = null;
          try { json = t ? JSON.parse(t) : null; } catch (e) { json = null; }
          if (r.ok) return json;
          var err = json && json.error ? json.error : { code: 'http_' + r.status, message: r.statusText };
          // An expired access token: refresh once with the refresh cookie, then retry.
          if (err.code === 'token_expired' && !retried) {
            return call('POST', '/v1/admin/refresh', {}, true).then(function () { return call(method, path, body, true); });
          }
          throw new ApiError(r.status, err.code, err.message);
        });
      });
  }

  function showError(e) {
    var box = $('error');
    if (!e) { box.hidden = true; return; }
    box.hidden = false;
    box.textContent = (e.code ? e.code + ': ' : '') + (e.message || String(e));
  }
  function notice(text) { var n = $('notice'); n.hidden = !text; n.textContent = text || ''; }

  function can(role) { return !!me && me.roles.indexOf(role) >= 0; }

  function act(label, handler, danger) {
    return el('button', { type: 'button', cls: 'small mutating' + (danger ? ' danger' : ''), text: label, onclick: handler });
  }

  function labelCells(table) {
    var heads = Array.prototype.map.call(table.tHead.rows[0].cells, function (c) { return c.textContent; });
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      Array.prototype.forEach.call(row.cells, function (c, i) { if (heads[i] && c.colSpan === 1) c.setAttribute('data-label', heads[i]); });
    });
  }

  function fill(tableId, rows, empty) {
    var table = $(tableId);
    var body = clear(table.tBodies[0]);
    if (!rows.length) body.appendChild(el('tr', null, el('td', { colspan: String(table.tHead.rows[0].cells.length), text: empty })));
    rows.forEach(function (r) { body.appendChild(r); });
    labelCells(table);
  }

  function after(p, message) {
    return p.then(function (r) { showError(null); notice(message ? message(r) : ''); return load(); }, showError);
  }

  // ---- sections ----

  function loadUsers() {
    return call('GET', '/v1/admin/users').then(function (page) {
      fill('users', page.items.map(function (u) {
        return el('tr', { 'data-user': u.username },
          td(u.username), td(u.role), td(u.totp ? 'set' : 'at first login'), td(utc(u.created_at)),
          el('td', null, u.disabled_at ? badge('disabled', 'failed') : badge('active', 'signed')),
          el('td', null, can('admin') && !u.disabled_at && u.username !== me.subject
            ? act('Disable', function () {
              if (!window.confirm('Disable ' + u.username + ' and end their sessions?')) return;
              after(call('POST', '/v1/admin/users/' + encodeURIComponent(u.username) + '/disable'), function () { return u.username + ' disabled.'; });
            }, true) : null));
      }), 'No users.');
    });
  }

  function loadKeys() {
    return call('GET', '/v1/admin/api-keys').then(function (page) {
      fill('keys', page.items.map(function (k) {
        var expired = k.expires_at && k.expires_at < new Date().toISOString();
        return el('tr', { 'data-key': k.name }, td(k.name), td(k.roles.join(', ')), td(k.created_by), td(utc(k.created_at)),
          td(k.expires_at ? utc(k.expires_at) : 'never'),
          el('td', null, k.revoked_at ? badge('revoked', 'failed') : expired ? badge('expired', 'failed') : badge('active', 'signed')),
          // An operator sees only its own keys, and may revoke them.
          el('td', null, (can('admin') || can('operator')) && !k.revoked_at ? act('Revoke', function () {
            if (!window.confirm('Revoke the key ' + k.name + '?')) return;
            after(call('DELETE', '/v1/admin/api-keys/' + k.id), function () { return 'Key ' + k.name + ' revoked.'; });
          }, true) : null));
      }), 'No API keys.');
    });
  }

  function loadWebhooks() {
    var consumers = call('GET', '/v1/webhooks').then(function (page) {
      fill('consumers', page.items.map(function (c) {
        return el('tr', null, td(c.url, 'addr'), td(c.events.join(', ')), td(utc(c.created_at)),
          el('td', null, c.active ? badge('active', 'signed') : badge('inactive', 'failed')),
          el('td', null, can('operator') && c.active ? act('Deactivate', function () {
            after(call('DELETE', '/v1/webhooks/' + c.id), function () { return 'Consumer deactivated.'; });
          }, true) : null));
      }), 'No consumers.');
    });
    var deliveries = call('GET', '/v1/webhooks/deliveries?limit=50').then(function (page) {
      fill('deliveries', page.items.map(function (d) {
        return el('tr', null, td(d.event_id, 'addr'), td(d.event_type), td(d.url, 'addr'),
          el('td', null, badge(d.state, d.state === 'delivered' ? 'signed' : d.state === 'dead' ? 'failed' : 'queued')),
          td(d.attempts, 'num'), td(d.last_error),
          el('td', null, can('operator') ? act('Redeliver', function () {
            after(call('POST', '/v1/webhooks/deliveries/' + d.event_id + '/redeliver'), function () { return 'Event queued again.'; });
          }) : null));
      }), 'No deliveries.');
    });
    return Promise.all([consumers, deliveries]);
  }

  function loadAudit() {
    var verify = call('GET', '/v1/admin/audit/verify').then(function (v) {
      var s = $('audit-status');
      s.textContent = v.ok ? 'chain intact' : 'chain broken';
      s.className = 'badge s-' + (v.ok ? 'healthy' : 'unhealthy');
      $('audit-note').textContent = v.ok ? v.entries + ' records re-checked: every hash links to the one before.'
        : 'The hash chain breaks at record ' + v.first_broken + ': history was changed after it was written.';
    });
    var list = call('GET', '/v1/admin/audit?limit=100').then(function (page) {
      fill('audit', page.items.map(function (a) {
        var change = (a.old_value || '') + (a.old_value || a.new_value ? ' → ' : '') + (a.new_value || '');
        return el('tr', null, td(a.id, 'num'), td(utc(a.at)), td(a.actor), td(a.action), td(a.target), td(change || null, 'addr'), td(a.ip));
      }), 'No records.');
    });
    return Promise.all([verify, list]);
  }

  function opRow(kind, o) {
    var sats = o.amount_sats !== undefined ? o.amount_sats : o.expected_sats;
    var where = kind === 'deposit' ? o.reserve_address + (o.vout !== null && o.vout !== undefined ? ':' + o.vout : '')
      : kind === 'mint' ? o.chain + ' → ' + o.to_address
      : kind === 'burn' ? o.chain + ' → ' + o.redeemer_address
      : 'burn ' + o.burn_id;
    var tx = o.txid || o.tx_hash || null;
    var state = String(o.state);
    if (kind === 'deposit') state += ' (' + o.confirmations + '/' + o.confirmations_needed + ' conf.)';
    return el('tr', { 'data-op': o.id }, td(kind), td(o.id, 'addr'), td(sats, 'num'), td(where, 'addr'),
      el('td', null, badge(state, 'unknown'), o.last_error ? el('div', { cls: 'note', text: o.last_error }) : null),
      approvalsCell(o.approvals),
      td(tx, 'addr'), td(o.created_by), td(utc(o.updated_at)));
  }

  // Each guardian's answer to a mint or release: its key's fingerprint (full key on
  // hover), the decision in words, the refusal code if any, and when it answered.
  // Deposits and burns need no guardian approval.
  function approvalsCell(approvals) {
    if (!approvals) return td('—');
    if (!approvals.length) return td('none yet');
    var list = el('ul', { cls: 'approvals' });
    approvals.forEach(function (a) {
      var word = a.decision + (a.reason_code ? ' (' + a.reason_code + ')' : '');
      list.appendChild(el('li', { 'data-guardian': a.guardian_key },
        el('code', { title: a.guardian_key, text: a.fingerprint || a.guardian_key.slice(0, 16) }), ' ',
        badge(word, a.decision === 'approved' ? 'healthy' : 'unhealthy'), ' ',
        el('span', { cls: 'note', text: utc(a.answered_at || a.recorded_at) })));
    });
    return el('td', null, list);
  }

  function loadReserveOps() {
    var rows = [];
    var missing = 0;
    return Promise.all(RESERVE_KINDS.map(function (kind) {
      return call('GET', '/v1/admin/' + kind + '?limit=50').then(function (page) {
        (page.items || []).forEach(function (o) { rows.push({ at: o.updated_at, row: opRow(kind.replace(/s$/, ''), o) }); });
      }, function (e) { if (e.status === 404 || e.status === 405) missing++; else throw e; });
    })).then(function () {
      $('reserves-note').textContent = missing === RESERVE_KINDS.length
        ? 'Reserve operations are not served by this server.'
        : 'Deposit → mint and burn → release, newest first. Guardians approve each mint and release M-of-N before it is submitted (its state moves on once they have).';
      rows.sort(function (a, b) { return a.at < b.at ? 1 : -1; });
      fill('ops', rows.map(function (r) { return r.row; }), 'No reserve operations.');
    });
  }

  function loadReserveAddresses() {
    return call('GET', '/v1/admin/reserve-addresses').then(function (page) {
      fill('reserve-addresses', page.items.map(function (a) {
        // The state before the long descriptor, so it stays in view on a narrow screen.
        return el('tr', { 'data-address': a.address }, td(a.address, 'mono'), td(a.kind), td(a.label),
          el('td', null, a.retired_at ? badge('retired', 'failed') : badge('active', 'signed')),
          td(utc(a.created_at)), td(a.retired_at ? utc(a.retired_at) : null), td(a.descriptor || null, 'mono'));
      }), 'No reserve addresses registered.');
      // A refusal shown by another tab (say, reserve operations for an admin) is not
      // about this one.
      showError(null);
    });
  }

  function load() {
    var section = (location.hash || '#users').slice(1);
    Array.prototype.forEach.call(document.querySelectorAll('.tabs a'), function (a) {
      if (a.getAttribute('href') === '#' + section) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    });
    Array.prototype.forEach.call(document.querySelectorAll('.tab'), function (t) { t.hidden = t.id !== 'tab-' + section; });
    var loader = { users: loadUsers, keys: loadKeys, webhooks: loadWebhooks, audit: loadAudit, reserves: loadReserveOps, addresses: loadReserveAddresses }[section] || loadUsers;
    return loader().catch(function (e) {
      if (e.status === 401) return showLogin();
      showError(e);
    });
  }

  // ---- session ----

  function showLogin() {
    me = null;
    $('who').hidden = true;
    $('app').hidden = true;
    $('enrol').hidden = true;
    $('login').hidden = false;
  }

  // The first login of an account offers its TOTP secret (to this user only) and a
  // token to confirm it with; nothing else opens until the code is confirmed.
  var enrolment = null;
  function showEnrolment(offer) {
    enrolment = offer;
    $('login').hidden = true;
    $('enrol-user').textContent = offer.username;
    $('enrol-secret').textContent = offer.totp_secret;
    $('enrol-uri').textContent = offer.otpauth_uri;
    $('enrol').hidden = false;
  }

  function showApp(principal) {
    me = principal;
    $('login').hidden = true;
    $('enrol').hidden = true;
    $('who').hidden = false;
    $('who-name').textContent = principal.subject;
    $('who-roles').textContent = principal.roles.join(', ');
    // Forms that change something exist in the page only for the roles they need.
    Array.prototype.forEach.call(document.querySelectorAll('form.mutating'), function (f) {
      f.hidden = !can(f.getAttribute('data-role'));
      if (f.hidden) f.remove();
    });
    $('app').hidden = false;
    return load();
  }

  function formJSON(form) {
    var data = {};
    Array.prototype.forEach.call(form.elements, function (e) {
      if (!e.name) return;
      if (e.type === 'checkbox') { (data[e.name] = data[e.name] || []); if (e.checked) data[e.name].push(e.value); } else data[e.name] = e.value;
    });
    return data;
  }

  function setup() {
    $('login-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var d = formJSON(ev.target);
      var body = { username: d.username, password: d.password };
      if (d.totp) body.totp = d.totp;
      call('POST', '/v1/admin/login', body).then(function (r) {
        ev.target.reset();
        showError(null);
        if (r && r.enrolment_required) return showEnrolment(r);
        return call('GET', '/v1/admin/me').then(showApp);
      }).catch(showError);
    });
    $('enrol-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var d = formJSON(ev.target);
      if (!enrolment) return showLogin();
      call('POST', '/v1/admin/login/enrol', { enrolment_token: enrolment.enrolment_token, totp: d.totp, new_password: d.new_password }).then(function () {
        ev.target.reset();
        enrolment = null;
        $('enrol-secret').textContent = '';
        $('enrol-uri').textContent = '';
        showError(null);
        return call('GET', '/v1/admin/me').then(showApp);
      }).catch(function (e) {
        // An expired or superseded offer: start again from the password.
        if (e.code === 'invalid_enrolment' || e.code === 'already_enrolled') showLogin();
        showError(e);
      });
    });
    $('logout').addEventListener('click', function () {
      // A reload rebuilds the page, forms included, for whoever logs in next.
      call('POST', '/v1/admin/logout').catch(function () { }).then(function () { location.reload(); });
    });
    var on = function (id, handler) { var f = $(id); if (f) f.addEventListener('submit', function (ev) { ev.preventDefault(); handler(ev.target, formJSON(ev.target)); }); };
    on('user-form', function (f, d) {
      after(call('POST', '/v1/admin/users', d), function (r) {
        f.reset();
        return 'User ' + r.username + ' created. Hand over the initial password; they set up their second factor and their own password at the first login.';
      });
    });
    on('key-form', function (f, d) {
      after(call('POST', '/v1/admin/api-keys', { name: d.name, roles: d.roles }), function (r) {
        f.reset();
        return 'API key (shown once): ' + r.key;
      });
    });
    on('op-key-form', function (f, d) {
      after(call('POST', '/v1/admin/api-keys', { name: d.name, roles: ['operator'], expires_in_secs: Number(d.days) * 86400 }), function (r) {
        f.reset();
        return 'Operator key (shown once, expires ' + utc(r.expires_at) + '): ' + r.key;
      });
    });
    // Reserve operations: empty optional fields are left out, amounts stay strings.
    var op = function (id, path, shape) {
      on(id, function (f, d) {
        var body = {};
        Object.keys(shape(d)).forEach(function (k) { var v = shape(d)[k]; if (v !== '' && v !== undefined) body[k] = v; });
        after(call('POST', path, body), function (r) { f.reset(); return 'Recorded: ' + r.id + ' (' + r.state + ').'; });
      });
    };
    op('deposit-form', '/v1/admin/deposits', function (d) { return { txid: d.txid, vout: d.vout === '' ? undefined : Number(d.vout), expected_sats: d.expected_sats }; });
    op('mint-form', '/v1/admin/mints', function (d) { return { deposit_id: d.deposit_id, chain: d.chain, to: d.to, amount: d.amount }; });
    op('burn-form', '/v1/admin/burns', function (d) { return { chain: d.chain, amount: d.amount, redeemer: d.redeemer }; });
    op('release-form', '/v1/admin/releases', function (d) { return { burn_id: d.burn_id, amount: d.amount }; });
    on('consumer-form', function (f, d) {
      after(call('POST', '/v1/webhooks', { url: d.url, secret: d.secret, events: d.events }), function () {
        f.reset();
        return 'Consumer registered.';
      });
    });
    window.addEventListener('hashchange', function () { if (me) { notice(''); load(); } });
    call('GET', '/v1/admin/me').then(showApp, function () { showLogin(); });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', setup);
  else setup();
})();
