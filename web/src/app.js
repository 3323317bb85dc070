// The public dashboard: reads only the public JSON API (docs/api.md) and builds the
// page with DOM calls (never innerHTML with data), so the Content-Security-Policy can
// forbid inline script. Amounts stay decimal strings / BigInt; only the charts turn
// them into floats, because a plot needs numbers and loses nothing a reader can see.
(function () {
  'use strict';

  var REFRESH_MS = 5000;
  var FEED_MS = 3000;
  var FEED_LIMIT = 15;
  var FINAL = { signed: 1, delivered: 1, rejected: 1, dropped: 1, failed: 1 };
  var $ = function (id) { return document.getElementById(id); };
  var config = { explorer_url: null };
  var chartState = { ratio: null, amounts: null };

  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (attrs[k] === null || attrs[k] === undefined) return;
        if (k === 'text') node.textContent = attrs[k];
        else if (k === 'cls') node.className = attrs[k];
        else node.setAttribute(k, attrs[k]);
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return node;
  }

  // Copies each column's heading onto its cells, so narrow screens can show a table
  // row as a list of "heading: value" lines (see app.css).
  function labelCells(table) {
    var heads = Array.prototype.map.call(table.tHead.rows[0].cells, function (c) { return c.textContent; });
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      Array.prototype.forEach.call(row.cells, function (c, i) { if (heads[i] && c.colSpan === 1) c.setAttribute('data-label', heads[i]); });
    });
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function ApiError(status, code, message) {
    this.status = status; this.code = code; this.message = message;
  }

  function getJSON(url) {
    return fetch(url, { headers: { accept: 'application/json' } }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (body) {
        if (r.ok) return body;
        var e = body && body.error ? body.error : { code: 'http_' + r.status, message: r.statusText };
        throw new ApiError(r.status, e.code, e.message);
      });
    });
  }

  function showError(e) {
    var box = $('error');
    if (!e) { box.hidden = true; return; }
    box.hidden = false;
    box.textContent = (e.code ? e.code + ': ' : '') + (e.message || String(e));
  }

  // Decimal string of base units -> decimal string with `decimals` places, exact.
  function formatUnits(baseUnits, decimals) {
    var neg = baseUnits.charAt(0) === '-';
    var digits = neg ? baseUnits.slice(1) : baseUnits;
    if (decimals === 0) return baseUnits;
    while (digits.length <= decimals) digits = '0' + digits;
    var whole = digits.slice(0, digits.length - decimals);
    var frac = digits.slice(digits.length - decimals);
    return (neg ? '-' : '') + whole.replace(/\B(?=(\d{3})+$)/g, ',') + '.' + frac;
  }

  function btc(sats) { return formatUnits(sats, 8); }

  function pad(n) { return n < 10 ? '0' + n : String(n); }

  function utc(iso) {
    if (!iso) return '—';
    var d = new Date(iso);
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' +
      pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds()) + ' UTC';
  }

  function ago(secs) {
    if (secs < 0) secs = 0;
    if (secs < 90) return secs + ' s ago';
    if (secs < 5400) return Math.round(secs / 60) + ' min ago';
    if (secs < 172800) return Math.round(secs / 3600) + ' h ago';
    return Math.round(secs / 86400) + ' days ago';
  }

  function timeEl(iso) {
    var secs = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    return el('time', { datetime: iso, title: utc(iso), text: ago(secs) });
  }

  function badge(word, cls) { return el('span', { cls: 'badge s-' + (cls || word), text: word }); }

  function statusOf(snapshot) {
    if (!snapshot) return { word: 'no data', cls: 'nodata' };
    if (snapshot.stale) return { word: 'stale', cls: 'stale' };
    return snapshot.healthy ? { word: 'healthy', cls: 'healthy' } : { word: 'unhealthy', cls: 'unhealthy' };
  }

  function short(s, n) { return s.length > 2 * n + 1 ? s.slice(0, n) + '…' + s.slice(-n) : s; }

  function explorerLink(address) {
    var tpl = config.explorer_url;
    if (!tpl) return el('span', { text: address });
    var href = tpl.indexOf('{address}') >= 0 ? tpl.split('{address}').join(encodeURIComponent(address))
      : tpl.replace(/\/?$/, '/') + encodeURIComponent(address);
    return el('a', { href: href, rel: 'noopener noreferrer', target: '_blank', title: 'open in the block explorer' }, address);
  }

  // ---- reserves ----

  function renderReserves(r) {
    var s = r.snapshot;
    var st = statusOf(s);
    $('ratio').textContent = s && s.ratio !== null ? s.ratio : '—';
    // Lets a test compare the page with /v1/reserves on the same snapshot.
    $('ratio').setAttribute('data-as-of', s ? s.as_of : '');
    var status = $('status');
    status.textContent = st.word;
    status.className = 'status s-' + st.cls;
    $('reserve-btc').textContent = s ? btc(s.reserve_sats) + ' BTC' : '—';
    $('supply-btc').textContent = s ? btc(s.supply_sats) + ' uBTC' : '—';
    clear($('as-of'));
    clear($('btc-block'));
    if (s) {
      $('as-of').appendChild(el('span', { text: utc(s.as_of) + ' (' + ago(s.age_secs) + ')' }));
      $('btc-block').appendChild(el('span', { text: String(s.bitcoin_height) + ' ' }));
      $('btc-block').appendChild(el('code', { title: s.bitcoin_block_hash, text: short(s.bitcoin_block_hash, 8) }));
    }
    $('status-note').textContent = !s ? 'No reserve snapshot has been taken yet.'
      : s.stale ? 'Stale: these figures are older than the allowed age, so they prove nothing about now.'
      : s.healthy ? 'Healthy: the reserve covers every token issued, on figures that are recent.'
      : 'Unhealthy: the reserve is below the tokens issued.';

    var tbody = clear($('chains').tBodies[0]);
    var supply = s ? s.supply : [];
    if (!supply.length) tbody.appendChild(el('tr', null, el('td', { colspan: '7', text: 'No supply figures yet.' })));
    supply.forEach(function (e) {
      var total = s.supply_sats === '0' ? null : BigInt(s.supply_sats);
      var share = total === null ? '—'
        : (Number((BigInt(e.supply_base_units) * 10000n) / total) / 100).toFixed(2) + ' %';
      tbody.appendChild(el('tr', { 'data-chain': e.chain },
        el('td', { text: e.chain }),
        el('td', { cls: 'num', 'data-testid': 'supply-' + e.chain, text: formatUnits(e.supply_base_units, e.decimals) }),
        el('td', { cls: 'num', text: share }),
        el('td', { cls: 'num', text: s.ratio === null ? '—' : s.ratio }),
        el('td', null, badge(st.word, st.cls)),
        el('td', { cls: 'num', title: e.block_hash, text: String(e.block_number) }),
        el('td', null, timeEl(e.as_of))));
    });

    var abody = clear($('addresses').tBodies[0]);
    // Balances are those counted in the snapshot, at its Bitcoin block; an address
    // counted there but retired since is still listed, so the rows add up to the total.
    var rows = r.addresses.slice();
    (s && s.addresses || []).forEach(function (b) {
      if (!rows.some(function (a) { return a.address === b.address; })) {
        rows.push({ address: b.address, balance_sats: b.balance_sats, utxos: b.utxos, kind: '—', label: 'no longer registered', since: null });
      }
    });
    if (!rows.length) abody.appendChild(el('tr', null, el('td', { colspan: '6', text: 'No reserve address registered.' })));
    rows.forEach(function (a) {
      var counted = s && a.balance_sats !== null && a.balance_sats !== undefined;
      abody.appendChild(el('tr', { 'data-address': a.address },
        el('td', { cls: 'addr' }, explorerLink(a.address)),
        el('td', { cls: 'num', 'data-testid': 'balance', 'data-sats': counted ? a.balance_sats : '',
          title: counted ? 'at block ' + s.bitcoin_height : 'not counted in the latest snapshot',
          text: counted ? btc(a.balance_sats) : (s ? 'not yet counted' : '—') }),
        el('td', { cls: 'num', text: counted ? String(a.utxos) : '—' }),
        el('td', { text: a.kind }),
        el('td', { text: a.label || '—' }),
        el('td', null, a.since ? el('time', { datetime: a.since, text: utc(a.since) }) : el('span', { text: '—' }))));
    });

    labelCells($('chains'));
    labelCells($('addresses'));
    var sel = $('range-chain');
    supply.forEach(function (e) {
      if (!sel.querySelector('option[value="' + CSS.escape(e.chain) + '"]')) sel.appendChild(el('option', { value: e.chain, text: e.chain }));
    });
  }

  function loadReserves() {
    return getJSON('/v1/reserves').then(function (r) { renderReserves(r); showError(null); }, showError);
  }

  // ---- reserve registry ----

  // The signed reserve registry's current version and fingerprint: what a verifier
  // compares with the one it pins (`ubtc verify --registry-fingerprint`).
  function renderRegistry(g) {
    var p = clear($('registry'));
    if (g.current_version === null) {
      p.appendChild(el('span', { text: 'Reserve registry: no version published yet, so proofs carry none and verify as unpinned.' }));
      return;
    }
    p.setAttribute('data-version', String(g.current_version));
    p.setAttribute('data-fingerprint', g.current_fingerprint);
    p.appendChild(el('span', { text: 'Reserve registry version ' + g.current_version + ', signed by its guardians; fingerprint ' }));
    p.appendChild(el('code', { cls: 'addr', text: g.current_fingerprint }));
    p.appendChild(el('span', { text: '. Pin it: ubtc verify proof.json --registry-fingerprint <fingerprint>.' }));
  }

  function loadRegistry() {
    return getJSON('/v1/reserves/registry').then(renderRegistry, showError);
  }

  // ---- history chart ----

  var MINUTE = 60000, HOUR = 3600000, DAY = 86400000;

  function rangeSpec() {
    var which = document.querySelector('input[name=range]:checked').value;
    var now = Date.now();
    if (which === '24h') return { from: now - DAY, to: now, bucket: 'minute' };
    if (which === '30d') return { from: now - 30 * DAY, to: now, bucket: 'hour' };
    if (which === '1y') return { from: now - 365 * DAY, to: now, bucket: 'day' };
    var from = Date.parse($('range-from').value + 'Z');
    var to = Date.parse($('range-to').value + 'Z');
    if (isNaN(from) || isNaN(to) || from >= to) return { error: 'Choose a start before the end.' };
    var span = to - from;
    // The API refuses more than 1,500 buckets: pick the finest width that fits.
    var bucket = span <= 1500 * MINUTE ? 'minute' : span <= 1500 * HOUR ? 'hour' : 'day';
    if (span > 1500 * DAY) return { error: 'A range longer than 1,500 days cannot be drawn.' };
    return { from: from, to: to, bucket: bucket };
  }

  function chartWidth(node) { return Math.max(260, node.clientWidth || 600); }

  function drawChart(key, node, data, series, range) {
    var opts = {
      width: chartWidth(node), height: 220,
      // The chosen range, not the data's extent: one point must not fill the width.
      scales: { x: { time: true, range: function () { return range; } } },
      series: [{ label: 'time (UTC)', value: '{YYYY}-{MM}-{DD} {HH}:{mm}' }].concat(series),
      // 24-hour UTC labels: times on the axis, dates once the range spans days.
      axes: [{ values: function (u, splits) {
        var span = range[1] - range[0];
        return splits.map(function (ts) {
          var d = new Date(ts * 1000);
          return span > 2 * 86400 ? (d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate())
            : pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes());
        });
      } }, { size: 70 }],
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'); }
    };
    if (chartState[key]) chartState[key].destroy();
    clear(node);
    chartState[key] = new uPlot(opts, data, node);
  }

  function loadHistory() {
    var spec = rangeSpec();
    var note = $('history-note');
    if (spec.error) { note.textContent = spec.error; return Promise.resolve(); }
    var chain = $('range-chain').value;
    var q = 'from=' + new Date(spec.from).toISOString() + '&to=' + new Date(spec.to).toISOString() + '&bucket=' + spec.bucket;
    if (chain) q += '&chain=' + encodeURIComponent(chain);
    return getJSON('/v1/reserves/history?' + q).then(function (h) {
      var t = [], ratio = [], minR = [], maxR = [], res = [], sup = [], chainSup = [];
      h.points.forEach(function (p) {
        t.push(Date.parse(p.time) / 1000);
        ratio.push(p.ratio_ppm === null ? null : p.ratio_ppm / 1e6);
        minR.push(p.min_ratio_ppm === null ? null : p.min_ratio_ppm / 1e6);
        maxR.push(p.max_ratio_ppm === null ? null : p.max_ratio_ppm / 1e6);
        res.push(Number(p.reserve_sats) / 1e8);
        sup.push(Number(p.supply_sats) / 1e8);
        chainSup.push(p.chain_supply_sats === null ? null : Number(p.chain_supply_sats) / 1e8);
      });
      var rnode = $('chart-ratio'), anode = $('chart-amounts');
      [rnode, anode].forEach(function (n) {
        n.setAttribute('data-points', String(h.points.length));
        n.setAttribute('data-from', h.from);
        n.setAttribute('data-to', h.to);
        n.setAttribute('data-bucket', h.bucket);
      });
      note.textContent = h.points.length + ' points, one per ' + h.bucket + ', from ' + utc(h.from) + ' to ' + utc(h.to) +
        (h.chain ? ' (supply of ' + h.chain + ' shown separately)' : '') + '.';
      var range = [Date.parse(h.from) / 1000, Date.parse(h.to) / 1000];
      // Series are drawn in order: the ratio last, so the bucket's extremes (often
      // equal to it) do not hide it.
      drawChart('ratio', rnode, [t, minR, maxR, ratio], [
        { label: 'lowest', stroke: '#a11a1a', dash: [4, 4], points: { show: false } },
        { label: 'highest', stroke: '#116d3a', dash: [4, 4], points: { show: false } },
        { label: 'ratio', stroke: '#0b57a4', width: 2, points: { show: true, size: 7, fill: '#0b57a4' } }
      ], range);
      var s = [t, sup, res], ser = [
        { label: 'supply uBTC (all chains)', stroke: '#a11a1a', width: 2, dash: [6, 3], points: { show: true, size: 5 } },
        { label: 'reserve BTC', stroke: '#116d3a', width: 2, points: { show: true, size: 7, fill: '#116d3a' } }
      ];
      if (h.chain) { s.push(chainSup); ser.push({ label: 'supply on ' + h.chain, stroke: '#7a5200', points: { show: true, size: 5 } }); }
      drawChart('amounts', anode, s, ser, range);
    }, function (e) { note.textContent = 'History unavailable: ' + e.code + ': ' + e.message; });
  }

  function setupRange() {
    var form = $('range');
    var toLocal = function (ms) { return new Date(ms).toISOString().slice(0, 16); };
    $('range-to').value = toLocal(Date.now());
    $('range-from').value = toLocal(Date.now() - 7 * DAY);
    form.addEventListener('change', function (ev) {
      var custom = document.querySelector('input[name=range]:checked').value === 'custom';
      $('custom-range').hidden = !custom;
      if (ev.target.name === 'range' || ev.target.id === 'range-chain') loadHistory();
    });
    form.addEventListener('submit', function (ev) { ev.preventDefault(); loadHistory(); });
    window.addEventListener('resize', function () {
      ['ratio', 'amounts'].forEach(function (k) {
        var u = chartState[k];
        if (u) u.setSize({ width: chartWidth($('chart-' + k)), height: 220 });
      });
    });
  }

  // ---- feed ----

  function validationItem(v) {
    var text = v.message.text !== null && v.message.text !== undefined ? v.message.text : '0x' + v.message.hex;
    return el('li', { 'data-id': v.id, 'data-status': v.status },
      badge(v.status),
      el('span', { cls: 'chain', text: v.payment.chain }),
      el('a', { cls: 'msg', href: '/validations/' + v.id, text: text || '(empty message)' }),
      timeEl(v.created_at));
  }

  function loadFeed() {
    return getJSON('/v1/validations?limit=' + FEED_LIMIT).then(function (page) {
      var feed = clear($('feed'));
      if (!page.items.length) feed.appendChild(el('li', { text: 'No validations yet.' }));
      page.items.forEach(function (v) { feed.appendChild(validationItem(v)); });
      $('feed-live').className = 'live';
      $('feed-live').textContent = 'live';
    }, function () {
      $('feed-live').className = 'live off';
      $('feed-live').textContent = 'offline';
    });
  }

  // ---- guardians ----

  function loadGuardians() {
    return getJSON('/v1/guardians').then(function (g) {
      $('guardians-note').textContent = g.threshold + '-of-' + g.guardians.length + ' for ' + g.reserve_address;
      var list = clear($('guardians'));
      g.guardians.forEach(function (x) {
        var refusals = (x.recent || []).filter(function (a) { return a.decision !== 'approved'; });
        var lastSecs = x.last_seen ? (Date.now() - Date.parse(x.last_seen)) / 1000 : null;
        var alive = lastSecs !== null && lastSecs < 600;
        list.appendChild(el('li', { 'data-guardian': x.name },
          badge(alive ? 'answering' : x.last_seen ? 'quiet' : 'not yet seen', alive ? 'alive' : 'unknown'),
          el('strong', { text: x.name }),
          el('code', { title: x.public_key, text: x.fingerprint || short(x.public_key, 6) }),
          el('span', { cls: 'meta', text: 'last answer: ' + (x.last_seen ? utc(x.last_seen) : 'none') }),
          el('span', { cls: 'meta', text: !(x.recent || []).length ? 'no answers yet' : refusals.length + ' refusal' + (refusals.length === 1 ? '' : 's') + ' in the last ' + x.recent.length + ' answers' +
            (refusals.length ? ' (latest: ' + (refusals[refusals.length - 1].reason_code || refusals[refusals.length - 1].decision) + ')' : '') })));
      });
    }, function (e) {
      clear($('guardians'));
      $('guardians-note').textContent = e.status === 404
        ? 'This server does not publish guardian liveness (it signs with a local key, or the guardians run elsewhere).'
        : 'Guardians unavailable: ' + e.message;
    });
  }

  // ---- lookup ----

  function lookup(tx) {
    var box = $('lookup-result');
    box.hidden = false;
    clear(box).appendChild(el('h2', { text: 'Transaction ' + tx }));
    return getJSON('/v1/validations?tx=' + encodeURIComponent(tx)).then(function (page) {
      if (!page.items.length) { box.appendChild(el('p', { text: 'No validation for this transaction on any chain (yet).' })); return; }
      var ol = el('ol', { cls: 'feed' });
      page.items.forEach(function (v) { ol.appendChild(validationItem(v)); });
      box.appendChild(ol);
    }, function (e) { box.appendChild(el('p', { cls: 'error', text: e.code + ': ' + e.message })); });
  }

  function setupLookup() {
    $('lookup').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var tx = $('lookup-tx').value.trim();
      if (!tx) return;
      if (location.pathname !== '/') { location.href = '/?tx=' + encodeURIComponent(tx); return; }
      history.replaceState(null, '', '/?tx=' + encodeURIComponent(tx));
      lookup(tx);
    });
    var q = new URLSearchParams(location.search).get('tx');
    if (q) { $('lookup-tx').value = q; lookup(q); }
  }

  // ---- one validation ----

  function kv(dl, key, value) {
    dl.appendChild(el('dt', { text: key }));
    dl.appendChild(el('dd', null, typeof value === 'string' ? el('span', { text: value }) : value));
  }

  function renderValidation(v) {
    var dl = clear($('validation-fields'));
    kv(dl, 'status', badge(v.status));
    if (v.reason) kv(dl, 'reason', v.reason.code + (v.reason.detail ? ': ' + v.reason.detail : ''));
    if (v.delay) kv(dl, 'delay', v.delay.message);
    kv(dl, 'id', el('code', { text: v.id }));
    kv(dl, 'chain', v.payment.chain);
    kv(dl, 'transaction', el('code', { text: v.payment.tx_hash + ':' + v.payment.index }));
    kv(dl, 'payer', el('code', { text: v.payment.payer }));
    kv(dl, 'amount', v.payment.amount.base_units + ' ' + v.payment.amount.unit);
    kv(dl, 'block', String(v.payment.block.number));
    kv(dl, 'message', v.message.text !== null && v.message.text !== undefined ? v.message.text : '0x' + v.message.hex);
    kv(dl, 'confirmations', String(v.confirmations));
    kv(dl, 'detected', utc(v.created_at));
    kv(dl, 'signed', utc(v.signed_at));
    if (!v.proof_url) { $('proof-card').hidden = true; return Promise.resolve(); }
    var file = 'proof-' + v.id + '.json';
    var link = $('bundle-link');
    link.href = v.proof_url;
    link.setAttribute('download', file);
    $('verify-cmd').textContent = 'curl -s ' + location.origin + v.proof_url + ' > ' + file + '\nubtc verify ' + file;
    $('statement').textContent = v.statement;
    $('proof-card').hidden = false;
    return getJSON(v.proof_url).then(function (b) {
      var tbody = clear($('signatures').tBodies[0]);
      b.reserves.forEach(function (r) {
        tbody.appendChild(el('tr', null,
          el('td', { cls: 'addr' }, explorerLink(r.address)),
          el('td', { cls: 'addr', text: r.signature })));
      });
      labelCells($('signatures'));
      var ul = clear($('approvals'));
      if (!b.approvals.length) ul.appendChild(el('li', { text: 'Signed with a single local key: no guardian approvals.' }));
      b.approvals.forEach(function (a) {
        ul.appendChild(el('li', null, badge(a.decision, a.decision === 'approved' ? 'approved' : 'refused'), ' ',
          el('code', { title: a.guardian_key, text: short(a.guardian_key, 8) }),
          a.reason_code ? ' ' + a.reason_code : '', ' at ' + utc(a.at)));
      });
    }, showError);
  }

  function showValidation(id) {
    $('view-home').hidden = true;
    $('view-validation').hidden = false;
    var poll = function () {
      return getJSON('/v1/validations/' + encodeURIComponent(id)).then(function (v) {
        showError(null);
        return renderValidation(v).then(function () {
          if (!FINAL[v.status]) setTimeout(poll, 2000);
        });
      }, showError);
    };
    poll();
  }

  function start() {
    setupLookup();
    // Without the dashboard settings addresses are shown without explorer links.
    getJSON('/dashboard.json').then(function (c) { config = c; }, function () { }).then(function () {
      var m = /^\/validations\/([0-9a-fA-F-]{36})$/.exec(location.pathname);
      if (m) { showValidation(m[1]); return; }
      setupRange();
      loadReserves().then(loadHistory);
      loadRegistry();
      loadFeed();
      loadGuardians();
      setInterval(loadReserves, REFRESH_MS);
      setInterval(loadRegistry, REFRESH_MS);
      setInterval(loadFeed, FEED_MS);
      setInterval(loadGuardians, REFRESH_MS);
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
