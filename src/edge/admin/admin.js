// socket-gateway admin page. Plain browser JavaScript, no build step, no library.
// Talks to the REST API (docs/protocol.md) and /metrics with the admin token or API key
// kept in sessionStorage. Everything user-supplied is rendered with textContent.
'use strict';

const KEY = 'socket-gateway.credential';
const HISTORY = 300; // samples kept for the charts (5 minutes at 1/s)
const PAGE = 200; // channels rendered per page (usable with 10,000 channels)
const EVENTS = 50; // a channel's newest events shown from its history
const $ = (id) => document.getElementById(id);

const state = {
  credential: sessionStorage.getItem(KEY),
  timers: [],
  history: [], // {conns, inRate, outRate}
  lastCounters: null, // {t, eventsIn, deliveries}
  selected: null,
  channelLimit: PAGE,
};

class HttpError extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super(e ? `${status} ${e.code}: ${e.message}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, opts = {}) {
  const headers = { Authorization: `Bearer ${state.credential}`, ...(opts.headers || {}) };
  const res = await fetch(path, { ...opts, headers, cache: 'no-store' });
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (res.status === 401) { signOut('Your credentials were refused. Sign in again.'); }
  if (!res.ok) throw new HttpError(res.status, body);
  return { status: res.status, body, text };
}

// ------------------------------------------------------------------ sign-in

function showSignIn(message = '') {
  $('signin').hidden = false;
  $('app').hidden = true;
  $('signout').hidden = true;
  $('signin-error').textContent = message;
  $('credential').focus();
}

async function signIn(credential) {
  state.credential = credential;
  try {
    await api('/api/socket/connections');
  } catch (e) {
    state.credential = null;
    showSignIn(e.status === 401 ? 'Refused: not an admin token or the API key.' : `Cannot reach the gateway: ${e.message}`);
    return;
  }
  sessionStorage.setItem(KEY, credential);
  $('signin').hidden = true;
  $('app').hidden = false;
  $('signout').hidden = false;
  start();
}

function signOut(message = '') {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  state.credential = null;
  sessionStorage.removeItem(KEY);
  showSignIn(message);
}

function setStatus(text, bad = false) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('bad', bad);
}

// ------------------------------------------------------------------ live metrics

/** Parses Prometheus text into [{name, labels, value}]. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
    let l;
    while ((l = re.exec(m[2] || ''))) labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

const sum = (samples, name) => samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
const fmt = (n) => (n >= 100 || Number.isInteger(n) ? Math.round(n).toLocaleString('en-US') : n.toFixed(1));

async function tickMetrics() {
  try {
    const [conns, metrics] = await Promise.all([
      api('/api/socket/connections'),
      fetch('/metrics', { cache: 'no-store' }).then((r) => r.text()),
    ]);
    const samples = parseMetrics(metrics);
    const now = performance.now();
    const counters = { t: now, eventsIn: sum(samples, 'socket_gateway_events_in_total'), deliveries: sum(samples, 'socket_gateway_deliveries_total') };
    let inRate = 0;
    let outRate = 0;
    const prev = state.lastCounters;
    if (prev && now > prev.t) {
      const dt = (now - prev.t) / 1000;
      inRate = Math.max(0, counters.eventsIn - prev.eventsIn) / dt;
      outRate = Math.max(0, counters.deliveries - prev.deliveries) / dt;
    }
    state.lastCounters = counters;
    const c = conns.body;
    state.history.push({ conns: c.connections, inRate, outRate });
    if (state.history.length > HISTORY) state.history.shift();

    $('conn-total').textContent = fmt(c.connections);
    $('rate-in').textContent = prev ? fmt(inRate) : '–';
    $('rate-out').textContent = prev ? fmt(outRate) : '–';
    $('channels-total').textContent = fmt(sum(samples, 'socket_gateway_channels'));
    renderInstances(c.instances);
    drawCharts();
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    setStatus('connected');
  } catch (e) {
    if (e.status !== 401) setStatus(`metrics: ${e.message}`, true);
  }
}

function renderInstances(instances) {
  const body = $('instances').tBodies[0];
  const frag = document.createDocumentFragment();
  for (const inst of instances) {
    const tr = document.createElement('tr');
    tr.dataset.instance = inst.id;
    const id = cell(tr, inst.id);
    id.className = 'mono';
    cell(tr, fmt(inst.connections)).className = 'num';
    const shards = cell(tr, '');
    inst.shards.forEach((n, i) => {
      const chip = document.createElement('span');
      chip.className = 'shard-chip';
      chip.title = `shard ${i}`;
      chip.textContent = `#${i}: ${fmt(n)}`;
      shards.appendChild(chip);
    });
    frag.appendChild(tr);
  }
  body.replaceChildren(frag);
}

// ------------------------------------------------------------------ charts (inline SVG)

const SVG = 'http://www.w3.org/2000/svg';
function svgEl(name, attrs) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function drawChart(svg, series, { area = false } = {}) {
  const W = 600;
  const H = 120;
  const pad = 6;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const x = (i) => (W * i) / (HISTORY - 1);
  const y = (v) => H - pad - ((H - 2 * pad) * v) / max;
  const nodes = [];
  for (const f of [0.25, 0.5, 0.75]) nodes.push(svgEl('line', { class: 'grid-line', x1: 0, x2: W, y1: y(max * f), y2: y(max * f) }));
  for (const s of series) {
    const offset = HISTORY - s.values.length;
    const pts = s.values.map((v, i) => `${x(i + offset).toFixed(1)},${y(v).toFixed(1)}`);
    if (pts.length === 0) continue;
    if (area) {
      const poly = `${x(offset).toFixed(1)},${H} ${pts.join(' ')} ${x(HISTORY - 1).toFixed(1)},${H}`;
      nodes.push(svgEl('polygon', { class: `area ${s.cls}`, points: poly }));
    }
    nodes.push(svgEl('polyline', { class: `series ${s.cls}`, points: pts.join(' ') }));
  }
  const label = svgEl('text', { x: 6, y: 14 });
  label.textContent = `max ${fmt(max)}`;
  nodes.push(label);
  svg.replaceChildren(...nodes);
}

function drawCharts() {
  const h = state.history;
  drawChart($('chart-conn'), [{ cls: 'conn', values: h.map((p) => p.conns) }], { area: true });
  drawChart($('chart-rate'), [
    { cls: 'in', values: h.map((p) => p.inRate) },
    { cls: 'out', values: h.map((p) => p.outRate) },
  ]);
}

// ------------------------------------------------------------------ channels and members

function cell(tr, text) {
  const td = document.createElement('td');
  td.textContent = text;
  tr.appendChild(td);
  return td;
}

let channelsSeq = 0;
async function loadChannels() {
  const seq = ++channelsSeq;
  const prefix = $('channel-filter').value;
  const q = new URLSearchParams({ prefix, limit: String(state.channelLimit) });
  try {
    const { body } = await api(`/api/socket/channels?${q}`);
    if (seq !== channelsSeq) return; // a newer request is on its way
    renderChannels(body);
  } catch (e) {
    if (e.status !== 401) $('channels-note').textContent = e.message;
  }
}

function renderChannels({ channels, total }) {
  const tbody = $('channels').tBodies[0];
  const frag = document.createDocumentFragment();
  for (const ch of channels) {
    const tr = document.createElement('tr');
    tr.dataset.channel = ch.name;
    if (ch.name === state.selected) tr.className = 'selected';
    cell(tr, ch.name);
    cell(tr, fmt(ch.members)).className = 'num';
    frag.appendChild(tr);
  }
  if (channels.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(tr, $('channel-filter').value ? 'No channel matches this prefix.' : 'No active channel.');
    td.colSpan = 2;
    td.className = 'empty';
    frag.appendChild(tr);
  }
  tbody.replaceChildren(frag);
  $('channels-note').textContent = channels.length < total
    ? `showing ${fmt(channels.length)} of ${fmt(total)}`
    : `${fmt(total)} channel${total === 1 ? '' : 's'}`;
  $('channels-more').hidden = channels.length >= total;
}

async function selectChannel(name) {
  state.selected = name;
  for (const tr of $('channels').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.channel === name);
  $('members-channel').textContent = name;
  $('events-channel').textContent = name;
  $('bc-channel').value = name;
  await Promise.all([loadMembers(), loadEvents()]);
}

async function loadMembers() {
  const name = state.selected;
  if (!name) return;
  try {
    const { body } = await api(`/api/socket/channels/${encodeURIComponent(name)}/members`);
    if (name !== state.selected) return;
    renderMembers(body.members, body.next !== undefined);
  } catch (e) {
    if (e.status !== 401) $('members-note').textContent = e.message;
  }
}

function actionButton(label, action, title, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'ghost small';
  b.textContent = label;
  b.title = title;
  b.dataset.action = action;
  b.addEventListener('click', onClick);
  return b;
}

// Moderation through the REST API: the reason and "let it reconnect" come from the form above
// the members table; the answer (or the error) is shown next to it.
async function moderate(kind, m) {
  const reason = $('mod-reason').value.trim();
  const reconnect = $('mod-reconnect').checked;
  const q = new URLSearchParams();
  if (reason) q.set('reason', reason);
  if (reconnect && kind !== 'remove') q.set('reconnect', 'true');
  const qs = q.toString() ? `?${q}` : '';
  const id = encodeURIComponent(m.socketId);
  const req = {
    remove: [`/api/socket/channels/${encodeURIComponent(state.selected)}/members/${id}${qs}`, 'DELETE'],
    disconnect: [`/api/socket/connections/${id}${qs}`, 'DELETE'],
    user: [`/api/socket/users/${encodeURIComponent(m.userId)}/disconnect${qs}`, 'POST'],
  }[kind];
  try {
    const { status, text } = await api(req[0], { method: req[1] });
    $('mod-result').textContent = `${status} ${text}`;
  } catch (e) {
    $('mod-result').textContent = e.message;
  }
  await loadMembers();
}

function renderMembers(members, more) {
  const tbody = $('members').tBodies[0];
  const frag = document.createDocumentFragment();
  const sorted = [...members].sort((a, b) => a.joinedAt - b.joinedAt);
  for (const m of sorted.slice(0, 1000)) {
    const tr = document.createElement('tr');
    tr.dataset.socketId = m.socketId;
    cell(tr, m.userId);
    cell(tr, m.socketId).className = 'mono';
    const info = m.info === null ? '—' : JSON.stringify(m.info);
    const td = cell(tr, info.length > 120 ? `${info.slice(0, 117)}…` : info);
    td.className = 'mono';
    td.title = info;
    const joined = new Date(m.joinedAt);
    cell(tr, joined.toLocaleTimeString()).title = joined.toISOString();
    const actions = cell(tr, '');
    actions.className = 'actions';
    actions.append(
      actionButton('Remove', 'remove', 'Take this socket out of the channel', () => moderate('remove', m)),
      actionButton('Disconnect', 'disconnect', 'Disconnect this socket', () => moderate('disconnect', m)),
      actionButton('Disconnect user', 'disconnect-user', 'Disconnect every socket of this user, on every instance', () => moderate('user', m)),
    );
    frag.appendChild(tr);
  }
  if (members.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(tr, 'No member: the channel is inactive.');
    td.colSpan = 5;
    td.className = 'empty';
    frag.appendChild(tr);
  }
  tbody.replaceChildren(frag);
  // The route answers its first page (1,000 members, by socket id) and `next` when more remain.
  $('members-note').textContent = more
    ? `showing the first ${fmt(members.length)} (by socket id); more remain`
    : `${fmt(members.length)} member${members.length === 1 ? '' : 's'}`;
}

// ------------------------------------------------------------------ recent events (channel history)

async function loadEvents() {
  const name = state.selected;
  if (!name) return;
  try {
    const { body } = await api(`/api/socket/channels/${encodeURIComponent(name)}/history?limit=${EVENTS}`);
    if (name !== state.selected) return;
    renderEvents(body.events);
  } catch (e) {
    if (e.status !== 401) $('events-note').textContent = e.message;
  }
}

/** Newest first; data shown as JSON, shortened (the full text in the tooltip). */
function renderEvents(events) {
  const tbody = $('events').tBodies[0];
  const frag = document.createDocumentFragment();
  for (const e of [...events].reverse()) {
    const tr = document.createElement('tr');
    tr.dataset.eventId = e.id;
    const at = new Date(e.ts);
    cell(tr, at.toLocaleTimeString()).title = `${at.toISOString()}\n${e.id}`;
    cell(tr, e.event).className = 'mono';
    const from = cell(tr, e.from ? e.from.userId : 'REST broadcast');
    from.title = e.from ? e.from.socketId : 'from: null';
    const data = JSON.stringify(e.data) ?? 'null';
    const td = cell(tr, data.length > 160 ? `${data.slice(0, 157)}…` : data);
    td.className = 'mono';
    td.title = data;
    frag.appendChild(tr);
  }
  if (events.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(tr, 'No event kept for this channel.');
    td.colSpan = 4;
    td.className = 'empty';
    frag.appendChild(tr);
  }
  tbody.replaceChildren(frag);
  $('events-note').textContent = `${fmt(events.length)} newest event${events.length === 1 ? '' : 's'} kept`;
}

// ------------------------------------------------------------------ broadcast

async function broadcast(ev) {
  ev.preventDefault();
  const out = $('bc-result');
  out.hidden = false;
  let data;
  const raw = $('bc-data').value.trim();
  try {
    data = raw === '' ? null : JSON.parse(raw);
  } catch (e) {
    out.className = 'result bad';
    out.textContent = `The data is not JSON: ${e.message}`;
    return;
  }
  const payload = { channel: $('bc-channel').value, event: $('bc-event').value, data };
  try {
    const { status, text } = await api('/api/socket/broadcast', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(payload),
    });
    out.className = 'result';
    out.textContent = `${status} ${text}`;
    if (payload.channel === state.selected) loadEvents();
  } catch (e) {
    out.className = 'result bad';
    out.textContent = e.body && typeof e.body === 'object' ? `${e.status} ${JSON.stringify(e.body)}` : e.message;
  }
}

// ------------------------------------------------------------------ wiring

function start() {
  for (const t of state.timers) clearInterval(t);
  state.history = [];
  state.lastCounters = null;
  tickMetrics();
  loadChannels();
  state.timers = [
    setInterval(tickMetrics, 1000),
    setInterval(loadChannels, 2000),
    setInterval(loadMembers, 2000),
    setInterval(loadEvents, 2000),
  ];
}

function init() {
  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('credential').value.trim();
    if (v) signIn(v);
  });
  $('signout').addEventListener('click', () => signOut());
  let debounce;
  $('channel-filter').addEventListener('input', () => {
    clearTimeout(debounce);
    state.channelLimit = PAGE;
    debounce = setTimeout(loadChannels, 150);
  });
  $('channels-more').addEventListener('click', () => { state.channelLimit += PAGE; loadChannels(); });
  $('channels').tBodies[0].addEventListener('click', (ev) => {
    const tr = ev.target.closest('tr[data-channel]');
    if (tr) selectChannel(tr.dataset.channel);
  });
  $('events-open').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = $('events-input').value.trim();
    if (name) selectChannel(name);
  });
  $('broadcast-form').addEventListener('submit', broadcast);
  if (state.credential) signIn(state.credential);
  else showSignIn();
}

init();
