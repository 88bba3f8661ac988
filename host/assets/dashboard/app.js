// The streamhost dashboard: draws every `state` event of /api/events and
// sends the actions of docs/dashboard.md. Plain JavaScript, no build step and
// nothing loaded from elsewhere, because the host compiles this file into its
// binary and the page must work offline.
'use strict';

(() => {
  const TOKEN_KEY = 'streamhost.token';
  const WINDOW_MS = 5 * 60 * 1000;
  const MIN_WINDOW_MS = 60 * 1000;
  const STALE_MS = 5000;
  const PALETTE = ['#2563eb', '#d97706', '#059669', '#db2777', '#7c3aed', '#0891b2', '#65a30d', '#dc2626'];

  const $ = (id) => document.getElementById(id);

  let info = null;
  let state = null;
  let token = takeToken();
  let lastStateAt = 0;
  let connected = false;
  const dlq = { stream: null, signature: null, records: [], fieldsShown: false, selected: new Set(), loading: false, again: false };
  let pluginLogSignature = null;

  // ---- small DOM helpers -------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k in el && typeof v !== 'string') el[k] = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  // Writes only on change: the page redraws every second and needless DOM
  // writes would restart text selection and screen-reader announcements.
  function setText(el, text) {
    const t = text === null || text === undefined ? '' : String(text);
    if (el.textContent !== t) el.textContent = t;
  }

  function setAttr(el, name, value) {
    const v = value === null || value === undefined ? null : String(value);
    if (v === null) el.removeAttribute(name);
    else if (el.getAttribute(name) !== v) el.setAttribute(name, v);
  }

  // Reuses each item's element across redraws, matched by key, so focus,
  // typed values and ticked boxes survive the once-a-second `state` event.
  function syncList(parent, items, key, create, update) {
    const old = new Map();
    for (const el of Array.from(parent.children)) old.set(el.dataset.key, el);
    let prev = null;
    for (const item of items) {
      const k = String(key(item));
      let el = old.get(k);
      if (el) old.delete(k);
      else {
        el = create(item);
        el.dataset.key = k;
      }
      update(el, item);
      const at = prev ? prev.nextSibling : parent.firstChild;
      if (at !== el) parent.insertBefore(el, at);
      prev = el;
    }
    for (const el of old.values()) el.remove();
  }

  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const int = (v) => (num(v) === null ? '–' : Math.round(v).toLocaleString('en-US'));

  function duration(ms) {
    ms = num(ms);
    if (ms === null) return '–';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    const s = Math.floor(ms / 1000);
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  }

  const clock = (ms) => (num(ms) === null ? '–' : new Date(ms).toLocaleTimeString('en-GB'));
  const arr = (v) => (Array.isArray(v) ? v : []);

  // ---- access: the admin token and read-only mode ---------------------------

  // The token arrives in the fragment so it never reaches a server log; it is
  // kept for this tab only and removed from the address bar at once, so it is
  // neither bookmarked nor shown in a screenshot.
  function takeToken() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (m) {
      const t = decodeURIComponent(m[1]);
      try { sessionStorage.setItem(TOKEN_KEY, t); } catch (_) { /* storage off: keep it in memory */ }
      history.replaceState(null, '', location.pathname + location.search);
      return t;
    }
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }

  function setToken(t) {
    token = t || null;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage off */ }
    // The dead letters' fields come only with the token: read them again.
    dlq.signature = null;
    applyAccess();
  }

  const canAct = () => Boolean(info && info.admin && token);

  function applyAccess() {
    const admin = Boolean(info && info.admin);
    $('readonly-note').hidden = !info || admin;
    $('token-form').hidden = !admin || Boolean(token);
    document.body.classList.toggle('readonly', !canAct());
    refreshControls();
  }

  // Every control inside an `.action` element acts on the host: disabled
  // without admin access, and while its own request is on its way.
  function refreshControls() {
    const allowed = canAct();
    for (const el of document.querySelectorAll('.action button, .action input, .action select')) {
      const want = !allowed || el.dataset.busy === '1';
      if (el.disabled !== want) el.disabled = want;
    }
  }

  // ---- talking to the host ------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, data) {
      super(message);
      this.status = status;
      this.data = data || null;
    }
  }

  async function api(method, path, body, wasm) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload;
    if (wasm) {
      headers['Content-Type'] = 'application/wasm';
      payload = wasm;
    } else if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, { method, headers, body: payload, cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, `the host cannot be reached (${e.message})`);
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!res.ok) {
      const why = (data && data.error) || text.trim() || res.statusText;
      throw new ApiError(res.status, `${res.status}: ${why}`, data);
    }
    return data;
  }

  let toastTimer = null;
  function toast(message, kind) {
    const el = $('toast');
    el.className = `toast show ${kind || 'ok'}`;
    el.textContent = `${clock(Date.now())}  ${message}`;
    clearTimeout(toastTimer);
    // Faded out, its text kept: the next answer replaces it.
    toastTimer = setTimeout(() => el.classList.remove('show'), 10000);
  }

  // Runs one action: the button is busy while it runs, and its answer or
  // refusal is shown as soon as it arrives.
  async function act(button, what, method, path, body, describe, wasm) {
    if (button) {
      button.dataset.busy = '1';
      refreshControls();
    }
    try {
      const answer = await api(method, path, body, wasm);
      const said = describe(answer || {});
      toast(typeof said === 'string' ? said : said.text, typeof said === 'string' ? 'ok' : said.kind);
      return answer || {};
    } catch (e) {
      const restored = e.data && e.data.restored ? ' (the previous file was put back and keeps serving)' : '';
      toast(`${what} failed: ${e.message}${restored}`, 'error');
      if (e.status === 401) {
        // A wrong or expired token: ask again rather than fail every action.
        setToken(null);
        $('token-input').focus();
      }
      return null;
    } finally {
      if (button) {
        delete button.dataset.busy;
        refreshControls();
      }
    }
  }

  const enc = encodeURIComponent;

  // ---- the stream in view ---------------------------------------------------------

  function streamNames() {
    const names = new Set(arr(info && info.streams));
    for (const st of arr(state && state.streams)) if (st && st.stream) names.add(st.stream);
    for (const p of arr(state && state.pipelines)) if (p && p.stream) names.add(p.stream);
    return Array.from(names);
  }

  function selectedStream() {
    return $('stream-select').value || streamNames()[0] || null;
  }

  function streamStatus(name) {
    return arr(state && state.streams).find((st) => st && st.stream === name) || null;
  }

  // Options marked data-fixed (such as "random") stay first; the rest follow
  // `values`, keeping the current choice when it still exists.
  function syncOptions(select, values) {
    const want = values.map(String);
    const have = Array.from(select.options).filter((o) => !o.dataset.fixed).map((o) => o.value);
    if (have.join('\u0000') === want.join('\u0000')) return;
    const keep = select.value;
    for (const o of Array.from(select.options)) if (!o.dataset.fixed) o.remove();
    for (const v of want) select.append(h('option', { value: v, text: v }));
    if (Array.from(select.options).some((o) => o.value === keep)) select.value = keep;
  }

  // ---- header -----------------------------------------------------------------------

  function renderHeader(s) {
    syncOptions($('stream-select'), streamNames());
    const st = streamStatus(selectedStream());
    setText($('stream-length'), st ? `${int(st.length)} entries` : '–');
    setAttr($('stream-length'), 'title', st ? `first ${st.first_id || '–'}, last ${st.last_id || '–'}` : null);
    const redis = $('redis-state');
    if (s.redis_error) {
      setText(redis, `unreachable: ${s.redis_error}`);
      redis.className = 'bad';
    } else {
      setText(redis, s.draining ? 'ok (host draining)' : 'ok');
      redis.className = s.draining ? 'warn' : 'good';
    }
    const p = s.producer;
    setText($('producer-state'), p
      ? `${int(p.per_second)}/s, ${int(p.produced)} produced${p.error ? ` (last append failed: ${p.error})` : ''}`
      : 'none in this process');
    $('producer-state').className = p && p.error ? 'bad' : '';
    $('producer-form').hidden = !p;
    const rate = $('producer-rate');
    if (p && !rate.dataset.touched && document.activeElement !== rate) rate.value = p.per_second;
  }

  // ---- consumer groups ----------------------------------------------------------------

  function deadLettered(c) {
    let n = 0;
    for (const [k, v] of Object.entries(c || {})) if (k.startsWith('dead_') && num(v) !== null) n += v;
    return n;
  }

  function groupsOf(s) {
    const groups = new Map();
    for (const st of arr(s.streams)) {
      for (const g of arr(st && st.groups)) {
        groups.set(`${st.stream}\u0000${g.name}`, { stream: st.stream, name: g.name, status: g, pipelines: [] });
      }
    }
    for (const p of arr(s.pipelines)) {
      const key = `${p.stream}\u0000${p.group}`;
      if (!groups.has(key)) groups.set(key, { stream: p.stream, name: p.group, status: null, pipelines: [] });
      groups.get(key).pipelines.push(p);
    }
    const list = Array.from(groups.values());
    list.sort((a, b) => a.stream.localeCompare(b.stream) || a.name.localeCompare(b.name));
    for (const g of list) g.pipelines.sort((a, b) => a.name.localeCompare(b.name));
    return list;
  }

  function renderGroups(s) {
    const list = groupsOf(s);
    const many = new Set(list.map((g) => g.stream)).size > 1;
    syncList($('group-cards'), list, (g) => `${g.stream}\u0000${g.name}`, createGroupCard, (card, g) => updateGroupCard(card, g, many));
    $('no-groups').hidden = list.length > 0;
  }

  function createGroupCard(g) {
    const consumers = h('tbody', { class: 'consumers' });
    const pending = h('tbody', { class: 'pending' });
    const addBtn = h('button', {
      type: 'button', class: 'small', 'data-testid': 'add-consumer', 'data-group': g.name,
      text: 'Add consumer',
      onclick: () => act(addBtn, `Adding a consumer to ${g.name}`, 'POST', '/api/consumers', { group: g.name },
        (a) => `Added consumer ${a.consumer || a.pipeline || ''} to ${g.name}`),
    });
    const fact = (label, field) => h('div', {}, h('dt', { text: label }), h('dd', { 'data-field': field, text: '–' }));
    return h('article', { class: 'card', 'data-testid': 'group-card', 'data-group': g.name, 'data-stream': g.stream },
      h('header', {}, h('h3', {}, h('span', { class: 'group-name', text: g.name }), ' ', h('small', { class: 'muted stream-label' })),
        h('span', { class: 'action' }, addBtn)),
      h('dl', { class: 'facts small' },
        fact('Last delivered', 'last-delivered'), fact('Lag', 'lag'), fact('Pending', 'pending'), fact('Consumers', 'consumers')),
      h('table', { class: 'consumers-table' },
        h('caption', { class: 'sr', text: `Consumers of ${g.name}` }),
        h('thead', {}, h('tr', {},
          ['Consumer', 'Processed', 'Pending', 'Idle', 'In flight', 'Crash next', 'Actions'].map((t, i) => h('th', { scope: 'col', class: i > 0 && i < 6 ? 'num' : null, text: t })))),
        consumers),
      h('h4', {}, 'Pending entries ', h('span', { class: 'count', 'data-testid': 'pending-count', 'data-group': g.name, text: '0' })),
      h('div', { class: 'scroll pending-scroll' },
        h('table', {},
          h('caption', { class: 'sr', text: `Pending entries of ${g.name}` }),
          h('thead', {}, h('tr', {}, ['Id', 'Consumer', 'Idle', 'Deliveries'].map((t, i) => h('th', { scope: 'col', class: i > 1 ? 'num' : null, text: t })))),
          pending),
        h('p', { class: 'muted pending-empty', text: 'Nothing pending.' })));
  }

  function updateGroupCard(card, g, many) {
    const st = g.status;
    const field = (f) => card.querySelector(`dd[data-field="${f}"]`);
    setText(card.querySelector('.stream-label'), many ? g.stream : '');
    setText(field('last-delivered'), st ? st.last_delivered_id : '–');
    setText(field('lag'), st ? `${int(st.lag)}${st.lag_exact === false ? '+' : ''}` : '–');
    setText(field('pending'), st ? int(st.pending) : '–');
    setText(field('consumers'), String(g.pipelines.length));

    const redisConsumers = new Map(arr(st && st.consumers).map((c) => [c.name, c]));
    const rows = g.pipelines.map((p) => ({ pipeline: p, redis: redisConsumers.get(p.consumer) || null, group: g.name }));
    const ours = new Set(g.pipelines.map((p) => p.consumer));
    // Consumers Redis knows that no pipeline here runs: a peer process, or a
    // consumer removed earlier whose name stays in the group.
    for (const c of redisConsumers.values()) if (!ours.has(c.name)) rows.push({ pipeline: null, redis: c, group: g.name });
    syncList(card.querySelector('tbody.consumers'), rows,
      (r) => (r.pipeline ? `p:${r.pipeline.name}` : `c:${r.redis.name}`), createConsumerRow, updateConsumerRow);

    const pend = arr(st && st.oldest_pending);
    syncList(card.querySelector('tbody.pending'), pend, (e) => e.id, createPendingRow, updatePendingRow);
    const total = st ? num(st.pending) : null;
    setText(card.querySelector('[data-testid="pending-count"]'),
      total !== null && total > pend.length ? `${pend.length} oldest of ${int(total)}` : String(pend.length));
    card.querySelector('.pending-empty').hidden = pend.length > 0;
  }

  function createConsumerRow(r) {
    const cell = (f) => h('td', { 'data-field': f, class: f === 'name' ? '' : 'num' });
    const tr = h('tr', { 'data-testid': 'consumer-row', 'data-group': r.group },
      cell('name'), cell('processed'), cell('pending'), cell('idle'), cell('in-flight'), cell('crash-next'));
    if (!r.pipeline) {
      tr.append(h('td', { class: 'muted', text: 'not in this process' }));
      return tr;
    }
    const p = r.pipeline.name;
    const crashN = h('input', { type: 'number', min: '1', max: '1000', value: '3', class: 'tiny', 'data-testid': 'crash-count', 'aria-label': `Deliveries of ${p} to drop` });
    const idle = h('input', { type: 'number', min: '0', value: '1000', class: 'tiny wide', 'data-testid': 'reclaim-idle', 'aria-label': `Minimum idle time in ms for ${p} to reclaim` });
    const crash = h('button', { type: 'button', class: 'small warn', 'data-testid': 'crash-btn', text: 'Crash next' });
    const reclaim = h('button', { type: 'button', class: 'small', 'data-testid': 'reclaim-btn', text: 'Reclaim now' });
    const remove = h('button', { type: 'button', class: 'small', 'data-testid': 'remove-btn', text: 'Remove', 'aria-label': `Remove consumer ${p}` });
    crash.setAttribute('aria-label', `Crash the next deliveries of ${p}`);
    reclaim.setAttribute('aria-label', `Reclaim idle entries to ${p} now`);
    crash.addEventListener('click', () => {
      const count = Number(crashN.value);
      act(crash, `Crash next on ${p}`, 'POST', `/api/consumers/${enc(p)}/crash`, { count },
        (a) => `${p} will drop its next ${int(a.crash_next ?? count)} deliveries unacked`);
    });
    reclaim.addEventListener('click', () => {
      const minIdle = Number(idle.value);
      act(reclaim, `Reclaim on ${p}`, 'POST', `/api/consumers/${enc(p)}/reclaim`, { min_idle_ms: minIdle },
        (a) => `${p} claimed ${int(a.claimed)} entries idle for at least ${duration(minIdle)}`);
    });
    remove.addEventListener('click', () => act(remove, `Removing ${p}`, 'POST', `/api/consumers/${enc(p)}/remove`, {},
      () => `Removed ${p} (drained)`));
    tr.append(h('td', { class: 'action row-actions' },
      h('span', { class: 'pair' }, crashN, crash), h('span', { class: 'pair' }, idle, reclaim), remove));
    return tr;
  }

  function updateConsumerRow(tr, r) {
    const f = (name) => tr.querySelector(`td[data-field="${name}"]`);
    const p = r.pipeline;
    const c = (p && p.counters) || {};
    setAttr(tr, 'data-pipeline', p ? p.name : null);
    setAttr(tr, 'data-consumer', p ? p.consumer : r.redis.name);
    const name = p ? (p.consumer === p.name ? p.name : `${p.name} (${p.consumer})`) : r.redis.name;
    setText(f('name'), name);
    const processed = p ? (num(c.acked) || 0) + deadLettered(c) : null;
    setText(f('processed'), p ? int(processed) : '–');
    setAttr(f('processed'), 'title', p
      ? `acked ${int(c.acked)}, dead-lettered ${int(deadLettered(c))}, handled ${int(c.handled)}, retried ${int(c.retried)}, reclaimed ${int(c.reclaimed)}, dropped by "crash next" ${int(p.crashed ?? c.crashed)}`
      : null);
    setText(f('pending'), r.redis ? int(r.redis.pending) : '0');
    setText(f('idle'), r.redis ? duration(r.redis.idle_ms) : '–');
    setText(f('in-flight'), p ? int(p.in_flight) : '–');
    setText(f('crash-next'), p ? int(p.crash_next) : '–');
    tr.classList.toggle('crashing', Boolean(p && p.crash_next > 0));
  }

  function createPendingRow() {
    return h('tr', { 'data-testid': 'pending-row' },
      h('td', { 'data-field': 'id', class: 'mono' }), h('td', { 'data-field': 'consumer' }),
      h('td', { 'data-field': 'idle', class: 'num' }), h('td', { 'data-field': 'deliveries', class: 'num' }));
  }

  function updatePendingRow(tr, e) {
    const f = (name) => tr.querySelector(`td[data-field="${name}"]`);
    setAttr(tr, 'data-id', e.id);
    setAttr(tr, 'data-consumer', e.consumer);
    setAttr(tr, 'data-deliveries', e.deliveries);
    setText(f('id'), e.id);
    setText(f('consumer'), e.consumer);
    setText(f('idle'), duration(e.idle_ms));
    setText(f('deliveries'), int(e.deliveries));
    tr.classList.toggle('redelivered', num(e.deliveries) !== null && e.deliveries > 1);
  }

  // ---- charts ---------------------------------------------------------------------------

  function groupColors(names) {
    const m = new Map();
    names.slice().sort().forEach((n, i) => m.set(n, PALETTE[i % PALETTE.length]));
    return m;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // One line per series, right edge = newest sample; null samples are gaps
  // (nothing ran), not zeros. The time axis spans the history there is, from
  // one to five minutes, so a freshly started host shows more than a sliver.
  function drawChart(canvas, t, lines, format) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const hgt = canvas.clientHeight;
    if (!w || !hgt) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(hgt * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, hgt);
    const left = 44;
    const top = 6;
    const bottom = hgt - 16;
    const right = w - 6;
    let max = 0;
    for (const l of lines) for (const v of l.values) if (num(v) !== null && v > max) max = v;
    max = niceMax(max);
    const end = t.length ? t[t.length - 1] : Date.now();
    const span = Math.min(WINDOW_MS, Math.max(MIN_WINDOW_MS, t.length ? end - t[0] : 0));
    const x = (ms) => left + ((ms - (end - span)) / span) * (right - left);
    const y = (v) => bottom - (v / max) * (bottom - top);

    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = '#5b6472';
    ctx.strokeStyle = '#e3e7ee';
    ctx.lineWidth = 1;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    for (const v of [0, max / 2, max]) {
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y(v)) + 0.5);
      ctx.lineTo(right, Math.round(y(v)) + 0.5);
      ctx.stroke();
      ctx.fillText(format(v), left - 4, y(v));
    }
    ctx.textBaseline = 'alphabetic';
    ctx.textAlign = 'left';
    ctx.fillText(span >= 120000 ? `−${Math.round(span / 60000)} min` : `−${Math.round(span / 1000)} s`, left, hgt - 3);
    ctx.textAlign = 'right';
    ctx.fillText('now', right, hgt - 3);

    for (const l of lines) {
      ctx.strokeStyle = l.color;
      ctx.fillStyle = l.color;
      ctx.lineWidth = 1.75;
      ctx.setLineDash(l.dotted ? [1, 3] : l.dashed ? [4, 3] : []);
      const n = Math.min(t.length, l.values.length);
      const at = (i) => (t[i] >= end - span ? num(l.values[i]) : null);
      ctx.beginPath();
      for (let i = 0; i < n; i++) {
        const v = at(i);
        if (v === null) continue;
        const joined = i > 0 && at(i - 1) !== null;
        if (joined) ctx.lineTo(x(t[i]), y(v));
        else ctx.moveTo(x(t[i]), y(v));
        // A sample between two gaps would draw nothing as a line: a dot shows it.
        if (!joined && (i + 1 >= n || at(i + 1) === null)) ctx.fillRect(x(t[i]) - 1.5, y(v) - 1.5, 3, 3);
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);
  }

  const lastOf = (values) => {
    for (let i = arr(values).length - 1; i >= 0; i--) if (num(values[i]) !== null) return values[i];
    return null;
  };
  const msOfUs = (us) => (num(us) === null ? null : us / 1000);
  const fmtCount = (v) => (v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k` : String(Math.round(v * 10) / 10));
  const fmtMsAxis = (v) => (v >= 100 ? String(Math.round(v)) : String(Math.round(v * 100) / 100));

  function renderCharts(s) {
    const series = s.series || {};
    const t = arr(series.t_ms);
    const groups = series.groups || {};
    const names = Object.keys(groups);
    const colors = groupColors(names);
    const pick = (field, map) => names.map((n) => ({
      color: colors.get(n),
      values: arr(groups[n] && groups[n][field]).map(map || ((v) => v)),
    }));
    drawChart($('chart-handled'), t, pick('handled_per_s'), fmtCount);
    drawChart($('chart-lag'), t, pick('lag'), fmtCount);
    const p50 = pick('p50_us', msOfUs);
    const p99 = pick('p99_us', msOfUs).map((l) => ({ ...l, dashed: true }));
    const wait = pick('wait_p99_us', msOfUs).map((l) => ({ ...l, dotted: true }));
    drawChart($('chart-latency'), t, [...p50, ...p99, ...wait], fmtMsAxis);

    const legend = names.slice().sort().map((n) => {
      const g = groups[n] || {};
      const p50v = msOfUs(lastOf(g.p50_us));
      const p99v = msOfUs(lastOf(g.p99_us));
      const waitv = msOfUs(lastOf(g.wait_p99_us));
      const ms = (v) => (v === null ? '–' : `${fmtMsAxis(v)} ms`);
      return {
        name: n,
        text: `${int(lastOf(g.handled_per_s))}/s · lag ${int(lastOf(g.lag))} · p50 ${ms(p50v)} · p99 ${ms(p99v)} · wait p99 ${ms(waitv)}`,
      };
    });
    syncList($('chart-legend'), legend, (l) => l.name,
      (l) => h('li', { 'data-testid': 'chart-legend-item' }, h('span', { class: 'swatch' }),
        h('b', { text: l.name }), ' ', h('span', { class: 'latest' })),
      (li, l) => {
        // Through the CSSOM: the host's content security policy refuses style attributes.
        li.querySelector('.swatch').style.background = colors.get(l.name);
        setText(li.querySelector('.latest'), l.text);
      });
    const summary = legend.map((l) => `${l.name}: ${l.text}`).join('; ') || 'no data yet';
    for (const id of ['chart-handled', 'chart-lag', 'chart-latency']) setAttr($(id), 'aria-label', `${$(id).previousElementSibling.textContent}. Now: ${summary}`);
  }

  // ---- dead letters ----------------------------------------------------------------------

  function renderDlqState(s) {
    const name = selectedStream();
    const st = streamStatus(name);
    const d = st && st.dlq;
    setText($('dlq-length'), d ? int(d.length) : '–');
    let kinds = d && d.kinds ? Object.entries(d.kinds).map(([k, n]) => `${k} ${int(n)}`).join(' · ') : '';
    if (kinds && d.kinds_estimated) kinds += ` (of the newest ${int(d.scanned)})`;
    setText($('dlq-kinds'), d ? `${d.key || ''}${kinds ? `: ${kinds}` : ''}` : (s.redis_error ? 'Redis cannot be read right now.' : ''));
    if (!d) return;
    // /api/dlq is read only when the dead-letter stream changed, not every second.
    const newest = arr(d.newest)[0];
    const signature = `${name}|${d.length}|${newest ? newest.id : ''}`;
    if (signature === dlq.signature && name === dlq.stream) return;
    dlq.signature = signature;
    if (num(d.length) === 0) {
      // An empty DLQ may not exist as a key yet: nothing to ask for.
      dlq.stream = name;
      dlq.records = [];
      renderDlqRows();
    } else {
      loadDlq(name);
    }
  }

  async function loadDlq(name) {
    if (dlq.loading) {
      dlq.again = true;
      return;
    }
    dlq.loading = true;
    try {
      const data = await api('GET', `/api/dlq?stream=${enc(name)}&limit=100`);
      dlq.stream = name;
      dlq.records = Array.isArray(data) ? data : arr(data && (data.records || data.rows));
      dlq.fieldsShown = Boolean(data && data.fields_shown);
      renderDlqRows();
    } catch (e) {
      toast(`Reading the dead letters failed: ${e.message}`, 'error');
      dlq.signature = null;
      if (e.status === 401) {
        // A wrong or expired token: ask again; read without it meanwhile.
        setToken(null);
        $('token-input').focus();
      }
    } finally {
      dlq.loading = false;
      if (dlq.again) {
        dlq.again = false;
        loadDlq(selectedStream());
      }
    }
  }

  function renderDlqRows() {
    const ids = new Set(dlq.records.map((r) => r.id));
    for (const id of Array.from(dlq.selected)) if (!ids.has(id)) dlq.selected.delete(id);
    syncList($('dlq-rows'), dlq.records, (r) => r.id, createDlqRow, updateDlqRow);
    $('dlq-empty').hidden = dlq.records.length > 0;
    $('dlq-fields-note').hidden = dlq.fieldsShown || dlq.records.length === 0;
    // These rows arrive after the state's redraw: their boxes need the access check too.
    refreshControls();
  }

  function createDlqRow(r) {
    const box = h('input', { type: 'checkbox', 'data-testid': 'dlq-select' });
    box.addEventListener('change', () => {
      if (box.checked) dlq.selected.add(r.id);
      else dlq.selected.delete(r.id);
    });
    return h('tr', { 'data-testid': 'dlq-row', 'data-id': r.id },
      h('td', { class: 'action' }, box),
      h('td', { 'data-field': 'source-id', class: 'mono' }), h('td', { 'data-field': 'kind' }),
      h('td', { 'data-field': 'reason', class: 'reason' }), h('td', { 'data-field': 'deliveries', class: 'num' }));
  }

  function updateDlqRow(tr, r) {
    const f = (name) => tr.querySelector(`td[data-field="${name}"]`);
    setAttr(tr, 'data-source-id', r.source_id);
    setAttr(tr, 'data-kind', r.kind);
    const box = tr.querySelector('input');
    box.checked = dlq.selected.has(r.id);
    setAttr(box, 'aria-label', `Select dead letter of entry ${r.source_id || r.id}`);
    setText(f('source-id'), r.source_id || '–');
    f('kind').replaceChildren(h('span', { class: `kind kind-${r.kind}`, text: r.kind || '?' }));
    // Both groups may dead-letter one entry: the group tells the two apart.
    f('reason').replaceChildren(h('span', { class: 'clamp' }, h('span', { class: 'muted', text: `${r.group || '?'}: ` }), r.reason || ''));
    const fields = r.undecodable
      ? `original fields undecodable: ${r.undecodable}`
      : dlq.fieldsShown
        ? arr(r.fields).map((x) => `${x.name}=${x.value}`).join(' ')
        : '(the entry\'s fields need the admin token)';
    setAttr(f('reason'), 'title', `${r.reason || ''}\n\nrecord ${r.id}, dead-lettered ${clock(r.failed_at_ms)} by ${r.consumer || '?'} (plugin ${r.plugin || '?'} ${r.plugin_version || ''})\n${fields}`);
    setText(f('deliveries'), r.deliveries === null || r.deliveries === undefined ? '–' : int(r.deliveries));
  }

  function describeRedrive(a) {
    // `totals` counts every row; `rows` lists at most the first 1,000.
    const t = a.totals;
    const by = t && t.outcomes ? { ...t.outcomes } : {};
    if (!t) for (const r of arr(a.rows)) by[r.outcome] = (by[r.outcome] || 0) + 1;
    const n = t ? num(t.records) : arr(a.rows).length;
    const parts = Object.entries(by).map(([k, m]) => `${k} ${m}`).join(', ');
    const moved = by.moved || 0;
    return { text: `Redrive: ${n} record${n === 1 ? '' : 's'}${parts ? ` (${parts})` : ''}`, kind: moved === n ? 'ok' : 'warn' };
  }

  async function redrive(button, body) {
    const name = selectedStream();
    const a = await act(button, 'Redrive', 'POST', '/api/dlq/redrive', { stream: name, ...body }, describeRedrive);
    if (a) {
      dlq.selected.clear();
      dlq.signature = null;
      loadDlq(name);
    }
  }

  // ---- plugins ------------------------------------------------------------------------------

  function renderPlugins(s) {
    const pipes = arr(s.pipelines).slice().sort((a, b) => a.name.localeCompare(b.name));
    syncList($('plugin-rows'), pipes, (p) => p.name, createPluginRow, updatePluginRow);
    syncOptions($('replay-pipeline'), pipes.map((p) => p.name));

    const log = arr(s.plugin_log);
    const signature = `${log.length}|${JSON.stringify(log[0] || null)}`;
    if (signature === pluginLogSignature) return;
    pluginLogSignature = signature;
    $('plugin-log').replaceChildren(...log.map((e) => h('tr', { 'data-testid': 'plugin-log-row', 'data-outcome': e.outcome, 'data-pipeline': e.pipeline },
      h('td', { text: clock(e.at_ms) }), h('td', { text: e.pipeline }),
      h('td', {}, h('span', { class: `kind outcome-${e.outcome}`, text: e.outcome })),
      h('td', { class: 'reason', title: e.path || '', text: e.error ? e.error : `${e.from || '–'} → ${e.to || '–'}` }))));
    $('plugin-log-empty').hidden = log.length > 0;
  }

  function createPluginRow(p) {
    const file = h('input', { type: 'file', accept: '.wasm,application/wasm', 'data-testid': 'plugin-file', 'aria-label': `New .wasm file for ${p.name}` });
    const send = h('button', { type: 'button', class: 'small', 'data-testid': 'plugin-upload', text: 'Upload', 'aria-label': `Upload the chosen .wasm to ${p.name}` });
    send.addEventListener('click', async () => {
      const f = file.files && file.files[0];
      if (!f) {
        toast(`Choose a .wasm file for ${p.name} first`, 'warn');
        file.focus();
        return;
      }
      const a = await act(send, `Uploading ${f.name} to ${p.name}`, 'POST', `/api/plugins/${enc(p.name)}`, undefined, (ans) => {
        if (ans.outcome === 'refused') return { text: `${p.name} refused ${f.name}: ${ans.error || 'no reason given'}`, kind: 'error' };
        if (ans.outcome === 'unchanged') return `${p.name}: ${f.name} is the version already running`;
        return `${p.name} swapped${ans.from ? ` from ${ans.from}` : ''} to ${ans.to || f.name}`;
      }, f);
      if (a) file.value = '';
    });
    return h('tr', { 'data-testid': 'plugin-row', 'data-pipeline': p.name },
      h('td', {}, h('b', { 'data-field': 'pipeline' }), h('br'), h('small', { class: 'muted', 'data-field': 'group' })),
      h('td', { 'data-field': 'identity', class: 'mono fill' }),
      h('td', { class: 'action upload' }, file, send, h('small', { class: 'muted upload-note' })));
  }

  function updatePluginRow(tr, p) {
    const pl = p.plugin || {};
    setText(tr.querySelector('[data-field="pipeline"]'), p.name);
    setText(tr.querySelector('[data-field="group"]'), p.group);
    const identity = pl.identity || (pl.name ? `${pl.name}@${(pl.version || '').slice(0, 12)}` : '–');
    setText(tr.querySelector('[data-field="identity"]'), identity);
    setAttr(tr.querySelector('[data-field="identity"]'), 'title', pl.path || null);
    // Without a file watcher (--no-watch) an upload would never be judged.
    const unwatched = pl.watched === false;
    tr.querySelector('.upload').classList.toggle('action', !unwatched);
    for (const el of tr.querySelectorAll('.upload input, .upload button')) if (unwatched) el.disabled = true;
    setText(tr.querySelector('.upload-note'), unwatched ? 'started with --no-watch' : '');
  }

  // ---- replay and trim ------------------------------------------------------------------------

  function verdictCell(r) {
    if (!r.outcome) return h('td', { class: 'muted', text: '–' });
    const detail = r.outcome === 'ack'
      ? `${arr(r.emits).length} emit${arr(r.emits).length === 1 ? '' : 's'}`
      : [r.kind, r.reason].filter(Boolean).join(': ');
    return h('td', { class: 'verdict', title: detail }, h('span', { class: `kind outcome-${r.outcome}`, text: r.outcome }), ' ', detail);
  }

  async function replay(ev) {
    ev.preventDefault();
    const pipeline = $('replay-pipeline').value;
    const body = {
      stream: selectedStream(),
      from: $('replay-from').value.trim() || '-',
      to: $('replay-to').value.trim() || '+',
      count: Number($('replay-count').value),
    };
    if (pipeline) body.pipeline = pipeline;
    const a = await act($('replay-btn'), 'Replay', 'POST', '/api/replay', body, (ans) => {
      const n = arr(ans.rows).length;
      return `Replayed ${n} entr${n === 1 ? 'y' : 'ies'}${pipeline ? ` through ${pipeline} (dry run)` : ''}`;
    });
    if (!a) return;
    const rows = arr(a.rows);
    $('replay-rows').replaceChildren(...rows.map((r) => h('tr', { 'data-testid': 'replay-row', 'data-id': r.id },
      h('td', { class: 'mono', text: r.id }),
      h('td', { class: 'fill mono', text: arr(r.fields).map((x) => `${x.name}=${x.value}`).join(' ') }),
      verdictCell(r))));
    const t = a.totals || {};
    setText($('replay-totals'), pipeline
      ? `${int(t.entries ?? rows.length)} entries: ${int(t.ack)} ack, ${int(t.retry)} retry, ${int(t.dead_letter)} dead-letter, ${int(t.emits)} emits (nothing was changed)`
      : `${int(t.entries ?? rows.length)} entries`);
  }

  function describeTrim(a) {
    let text = `Trim ${a.stream || ''}: removed ${int(a.removed)} (${int(a.before)} → ${int(a.after)} entries)`;
    if (a.held_by) text += `; held back by group ${a.held_by}, which still needs entries from ${a.floor || '?'} on`;
    else if (a.floor) text += `; oldest entry a group still needs: ${a.floor}`;
    for (const l of arr(a.lost)) text += `; group ${l.group} lost ${arr(l.pending).length} pending and ${int(l.undelivered)} undelivered entries`;
    return text;
  }

  async function trim(ev) {
    ev.preventDefault();
    const maxlen = $('trim-maxlen').value.trim();
    const age = $('trim-age').value.trim();
    if (!maxlen && !age) {
      toast('Trim needs a maximum length or a maximum age', 'warn');
      $('trim-maxlen').focus();
      return;
    }
    const body = { stream: selectedStream() };
    if (maxlen) body.maxlen = Number(maxlen);
    if (age) body.max_age_ms = Math.round(Number(age) * 1000);
    const a = await act($('trim-btn'), 'Trim', 'POST', '/api/trim', body, (ans) => ({ text: describeTrim(ans), kind: ans.held_by ? 'warn' : 'ok' }));
    if (a) {
      setText($('trim-result'), describeTrim(a));
      $('trim-result').className = a.held_by ? 'warn' : '';
    }
  }

  function renderRetention() {
    const st = streamStatus(selectedStream());
    const r = st && st.retention;
    if (!r) {
      setText($('retention-state'), '');
      return;
    }
    const policy = [r.maxlen != null ? `at most ${int(r.maxlen)} entries` : null, r.max_age_ms != null ? `at most ${duration(r.max_age_ms)} old` : null].filter(Boolean).join(', ');
    const floor = r.floor ? `Nothing from ${r.floor} on can be trimmed: group ${r.floor_group || '?'} has not finished it.` : 'Every group is up to date: trimming removes only finished entries.';
    const held = r.held_back ? ` The policy (${policy}) is held back by group ${r.held_by || r.floor_group || '?'}.` : policy ? ` Policy: ${policy}.` : ' No retention policy is configured.';
    setText($('retention-state'), floor + held);
    $('retention-state').className = r.held_back ? 'warn' : 'muted';
  }

  // ---- partitioned streams ------------------------------------------------------------------------

  // One block per partitioned stream: its totals and a row per partition
  // and group, with the host holding the partition's lease.
  function renderPartitions(s) {
    const list = arr(s.partitioned);
    $('partitions').hidden = list.length === 0;
    syncList($('partition-streams'), list, (p) => p.stream, createPartitionBlock, updatePartitionBlock);
  }

  function createPartitionBlock() {
    const rows = h('tbody');
    return h('div', { class: 'partition-stream' },
      h('p', { class: 'muted', 'data-role': 'summary' }),
      h('table', {},
        h('thead', {}, h('tr', {}, ['Partition', 'Key', 'Entries', 'Group', 'Owner', 'Lag', 'Pending', 'Dead letters'].map((t) => h('th', { scope: 'col', text: t })))),
        rows));
  }

  function updatePartitionBlock(el, p) {
    const groups = arr(p.groups).map((g) => `group ${g.name}: lag ${int(g.lag)}${g.lag_exact ? '' : '+'}, ${int(g.pending)} pending, ${g.leased}/${g.partitions} leased${arr(g.hosts).length ? ` by ${arr(g.hosts).join(', ')}` : ''}`);
    setText(el.querySelector('[data-role=summary]'), `${p.stream}: ${int(p.partitions)} partitions, ${int(p.length)} entries, ${int(p.dead_letters)} dead letters${groups.length ? `; ${groups.join('; ')}` : ''}`);
    const rows = [];
    for (const r of arr(p.rows)) {
      const st = r.status || {};
      const gs = arr(st.groups);
      if (gs.length === 0) rows.push({ key: `${r.index}`, r, st, g: null });
      for (const g of gs) rows.push({ key: `${r.index}\u0000${g.name}`, r, st, g });
    }
    syncList(el.querySelector('tbody'), rows, (x) => x.key, () => h('tr', {}, Array.from({ length: 8 }, () => h('td'))), (tr, x) => {
      const owner = x.g && x.r.owners ? x.r.owners[x.g.name] : null;
      const cells = [x.r.index, x.r.key, int(x.st.length), x.g ? x.g.name : (x.r.exists ? '–' : '(no key yet)'), owner || '–',
        x.g ? `${int(x.g.lag)}${x.g.lag_exact ? '' : '+'}` : '–', x.g ? int(x.g.pending) : '–', int(x.st.dlq && x.st.dlq.length)];
      cells.forEach((c, i) => setText(tr.children[i], c));
      tr.dataset.partition = x.r.index;
      tr.dataset.owner = owner || '';
    });
  }

  // ---- live state -------------------------------------------------------------------------------

  function render(s) {
    state = s;
    lastStateAt = Date.now();
    // Each part on its own: one unexpected field must not blank the rest.
    for (const part of [renderHeader, renderGroups, renderPartitions, renderCharts, renderDlqState, renderPlugins, renderRetention]) {
      try { part(s); } catch (e) { console.error(`dashboard: ${part.name}`, e); }
    }
    refreshControls();
  }

  function setConnected(up) {
    connected = up;
    $('conn-banner').hidden = up;
    setText($('conn-state'), up ? 'live' : 'disconnected');
    $('conn-state').className = `badge ${up ? 'good' : 'bad'}`;
  }

  function connect() {
    const es = new EventSource('/api/events');
    es.addEventListener('state', (ev) => {
      let s;
      try { s = JSON.parse(ev.data); } catch (e) {
        console.error('dashboard: unreadable state', e);
        return;
      }
      if (!connected) setConnected(true);
      render(s);
    });
    es.addEventListener('error', () => {
      setConnected(false);
      // EventSource retries by itself unless the answer was not an event
      // stream at all (CLOSED); then a new one is made after a pause.
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
      else loadInfoSoon();
    });
  }

  // A host restarted with other flags (admin or not) answers differently:
  // /api/info is read again whenever the stream comes back.
  let infoTimer = null;
  function loadInfoSoon() {
    if (infoTimer) return;
    infoTimer = setTimeout(() => {
      infoTimer = null;
      loadInfo();
    }, 2000);
  }

  async function loadInfo() {
    try {
      info = await api('GET', '/api/info');
    } catch (e) {
      loadInfoSoon();
      return;
    }
    setText($('version'), info.version ? `v${info.version}${info.demo ? ' · demo' : ''}` : '');
    const types = arr(info.event_types);
    syncOptions($('produce-type'), types.filter((t) => t !== 'random'));
    // Only a process with something to produce from (host demo) offers it.
    for (const id of ['producer-form', 'produce-form']) $(id).hidden = !info.demo;
    $('producer-state').closest('div').hidden = !info.demo;
    applyAccess();
  }

  function wire() {
    $('produce-type').options[0].dataset.fixed = '1';
    $('replay-pipeline').options[0].dataset.fixed = '1';
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      setToken($('token-input').value.trim());
      $('token-input').value = '';
      toast('Admin token set for this tab');
    });
    $('produce-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const count = Number($('produce-count').value);
      const type = $('produce-type').value;
      act($('produce-btn'), 'Produce', 'POST', '/api/produce', { stream: selectedStream(), count, type },
        (a) => `Produced ${int(a.count ?? count)} ${type} event${count === 1 ? '' : 's'} on ${a.stream || selectedStream()} (${a.first_id || '?'} … ${a.last_id || '?'})`);
    });
    // Once someone works on the rate field, the once-a-second redraw leaves it
    // alone until the rate is set (it would otherwise undo a half-typed value).
    for (const ev of ['focus', 'input', 'change']) {
      $('producer-rate').addEventListener(ev, () => { $('producer-rate').dataset.touched = '1'; });
    }
    $('producer-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const perSecond = Number($('producer-rate').value);
      act($('producer-set'), 'Setting the producer rate', 'POST', '/api/producer', { per_second: perSecond, stream: selectedStream() },
        (a) => `Producer rate is now ${int(a.per_second ?? perSecond)}/s`).then((a) => { if (a) delete $('producer-rate').dataset.touched; });
    });
    $('stream-select').addEventListener('change', () => {
      dlq.signature = null;
      if (state) render(state);
    });
    $('dlq-redrive-selected').addEventListener('click', () => {
      if (!dlq.selected.size) {
        toast('Select the dead letters to redrive first', 'warn');
        return;
      }
      redrive($('dlq-redrive-selected'), { ids: Array.from(dlq.selected) });
    });
    $('dlq-redrive-all').addEventListener('click', () => redrive($('dlq-redrive-all'), { all: true }));
    $('replay-form').addEventListener('submit', replay);
    $('trim-form').addEventListener('submit', trim);
    window.addEventListener('resize', () => { if (state) renderCharts(state); });
    // A stream that stays open but goes quiet (a frozen host) is a drop too.
    setInterval(() => {
      if (connected && Date.now() - lastStateAt > STALE_MS) setConnected(false);
    }, 1000);
  }

  wire();
  applyAccess();
  loadInfo();
  connect();
})();
