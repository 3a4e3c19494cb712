// sextant's dashboard: every service with its health, live (Consul's blocking queries), a
// search box, an instance's checks, and each service's last hour. Plain DOM, no framework: the
// file is embedded in the binary as written. Text from the server is only ever set as text.
'use strict';

const TOKEN_KEY = 'sextant-token';
const WAIT = '5m';
const HISTORY_EVERY_MS = 10000;
const MAX_ROWS = 500;
const SVG = 'http://www.w3.org/2000/svg';

const state = {
  services: [],
  filter: '',
  selected: null,
  history: {},
  stepSeconds: 30,
  detailIndex: 0,
  detailAbort: null,
};

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

// === the API ===

class Forbidden extends Error {}

async function api(path, signal) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers['X-Consul-Token'] = token;
  const response = await fetch(path, { headers, signal, cache: 'no-store' });
  if (response.status === 403) throw new Forbidden(await response.text());
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  return { index: Number(response.headers.get('X-Consul-Index') || 0), body: await response.json() };
}

// A blocking query's next index, by Consul's rules: start again from 0 when it goes backwards
// (a restarted server), never block on 0.
const nextIndex = (previous, given) => (given < previous || given < 1 ? 0 : given);

function setLive(status, detail) {
  const live = $('live');
  live.dataset.state = status;
  live.textContent = status === 'live' ? 'live' : 'reconnecting…';
  live.title = detail || 'Updates arrive as they happen';
}

// === the token ===

let signedIn = null;

// Shows the login form and resolves once a token has been entered.
function needToken(message) {
  $('overview').hidden = true;
  $('detail').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = sessionStorage.getItem(TOKEN_KEY) ? message : '';
  $('token').focus();
  return new Promise((resolve) => { signedIn = resolve; });
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value);
  $('token').value = '';
  $('login').hidden = true;
  $('sign-out').hidden = false;
  if (signedIn) signedIn();
});

$('sign-out').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

// === the services ===

async function followServices() {
  let index = 0;
  let pause = 1000;
  for (;;) {
    try {
      const query = index > 0 ? `?index=${index}&wait=${WAIT}` : '';
      const answer = await api(`/v1/internal/ui/services${query}`);
      index = nextIndex(index, answer.index);
      state.services = answer.body;
      pause = 1000;
      setLive('live');
      if (sessionStorage.getItem(TOKEN_KEY)) $('sign-out').hidden = false;
      show();
      renderServices();
      loadHistory();
    } catch (error) {
      index = 0;
      if (error instanceof Forbidden) {
        await needToken(error.message);
        continue;
      }
      setLive('retrying', error.message);
      await sleep(pause);
      pause = Math.min(pause * 2, 10000);
    }
  }
}

function matches(service) {
  const words = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
  const text = [service.Name, ...service.Tags].join(' ').toLowerCase();
  return words.every((word) => text.includes(word));
}

function visibleServices() {
  return state.services.filter(matches).slice(0, MAX_ROWS);
}

function counts(passing, warning, critical) {
  const cell = el('span');
  for (const [value, kind] of [[passing, 'passing'], [warning, 'warning'], [critical, 'critical']]) {
    cell.append(el('span', { class: `count ${value ? kind : 'zero'}`, title: `${value} ${kind}`, 'data-kind': kind, text: String(value) }));
  }
  return cell;
}

function renderServices() {
  const shown = visibleServices();
  const total = state.services.length;
  const instances = state.services.reduce((sum, s) => sum + s.InstanceCount, 0);
  const critical = state.services.reduce((sum, s) => sum + s.InstancesCritical, 0);
  $('summary').textContent = `${total} services, ${instances} instances, ${critical} critical`
    + (shown.length < state.services.filter(matches).length ? ` — showing the first ${shown.length}` : '');
  const body = el('tbody');
  for (const service of shown) {
    const row = el('tr', {
      'data-service': service.Name,
      'data-passing': service.InstancesPassing,
      'data-warning': service.InstancesWarning,
      'data-critical': service.InstancesCritical,
      'data-flapping': service.InstancesFlapping,
    },
    el('td', { class: 'name', text: service.Name }),
    el('td', {}, counts(service.InstancesPassing, service.InstancesWarning, service.InstancesCritical),
      service.InstancesFlapping ? el('span', { class: 'badge flapping', title: 'instances held out of DNS for flapping', text: `${service.InstancesFlapping} flapping` }) : null),
    el('td', {}, counts(service.ChecksPassing, service.ChecksWarning, service.ChecksCritical)),
    el('td', {}, ...service.Tags.map((tag) => el('span', { class: 'tag', text: tag }))),
    el('td', { class: 'history' }, chart(state.history[service.Name], 180, 36)));
    row.addEventListener('click', () => { location.hash = `#/service/${encodeURIComponent(service.Name)}`; });
    body.append(row);
  }
  $('services').tBodies[0].replaceWith(body);
  $('empty').hidden = shown.length > 0;
}

$('search').addEventListener('input', (event) => {
  state.filter = event.target.value;
  renderServices();
  loadHistory();
});

// === the last hour ===

let historyTimer = null;

async function loadHistory() {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(loadHistory, HISTORY_EVERY_MS);
  const names = visibleServices().slice(0, 200).map((s) => s.Name);
  if (state.selected && !names.includes(state.selected)) names.push(state.selected);
  if (names.length === 0) return;
  try {
    const query = names.map((name) => `name=${encodeURIComponent(name)}`).join('&');
    const { body } = await api(`/v1/internal/ui/history?${query}`);
    state.stepSeconds = body.StepSeconds;
    Object.assign(state.history, body.Services);
    for (const cell of document.querySelectorAll('tr[data-service] td.history')) {
      cell.replaceChildren(chart(state.history[cell.parentElement.dataset.service], 180, 36));
    }
    if (state.selected) $('detail-chart').replaceChildren(bigChart(state.history[state.selected]));
  } catch (error) {
    // The list's own loop reports the connection; a chart waits for the next round.
  }
}

// A chart of one service's hour: instances by health as stacked bars, DNS queries per second as
// a line over them.
function chart(history, width, height) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  // The hour's extent, so a service registered a few minutes ago shows as recent.
  const frame = document.createElementNS(SVG, 'rect');
  frame.setAttribute('class', 'frame');
  frame.setAttribute('width', width);
  frame.setAttribute('height', height);
  svg.append(frame);
  if (!history) {
    svg.dataset.points = '0';
    return svg;
  }
  const points = history.Queries.length;
  const slot = width / points;
  const most = Math.max(1, ...history.Passing.map((p, i) => (p ?? 0) + (history.Warning[i] ?? 0) + (history.Critical[i] ?? 0)));
  const band = height * 0.35;
  for (let i = 0; i < points; i++) {
    let y = height;
    for (const kind of ['Passing', 'Warning', 'Critical']) {
      const value = history[kind][i];
      if (!value) continue;
      const h = (value / most) * band;
      y -= h;
      const bar = document.createElementNS(SVG, 'rect');
      bar.setAttribute('class', kind.toLowerCase());
      bar.setAttribute('x', (i * slot).toFixed(2));
      bar.setAttribute('y', y.toFixed(2));
      bar.setAttribute('width', Math.max(slot - 0.3, 0.5).toFixed(2));
      bar.setAttribute('height', h.toFixed(2));
      svg.append(bar);
    }
  }
  const rates = history.Queries.map((q) => q ?? 0);
  const top = Math.max(...rates);
  const scale = top > 0 ? (height - band - 3) / top : 0;
  // The line where there are points: a service registered ten minutes ago has ten minutes.
  const path = history.Queries.map((q, i) => {
    if (q === null) return '';
    const move = i === 0 || history.Queries[i - 1] === null ? 'M' : 'L';
    return `${move}${((i + 0.5) * slot).toFixed(2)},${(height - band - 1 - q * scale).toFixed(2)}`;
  }).join(' ');
  const line = document.createElementNS(SVG, 'path');
  line.setAttribute('class', 'queries');
  line.setAttribute('d', path);
  svg.append(line);
  // Now, as a dot: the step in progress (and the only point of a service just registered).
  const dot = document.createElementNS(SVG, 'circle');
  dot.setAttribute('class', 'now');
  dot.setAttribute('cx', ((points - 0.5) * slot).toFixed(2));
  dot.setAttribute('cy', (height - band - 1 - rates[points - 1] * scale).toFixed(2));
  dot.setAttribute('r', '2');
  svg.append(dot);
  const title = document.createElementNS(SVG, 'title');
  const now = rates[rates.length - 1];
  title.textContent = `DNS: ${now.toFixed(2)} queries/s now, at most ${top.toFixed(2)} in the last hour; `
    + `instances now: ${history.Passing[points - 1]} passing, ${history.Warning[points - 1]} warning, ${history.Critical[points - 1]} critical`;
  svg.append(title);
  svg.dataset.points = String(history.Queries.filter((q) => q !== null).length);
  svg.dataset.maxQps = top.toFixed(3);
  return svg;
}

function bigChart(history) {
  const box = el('div');
  const top = history ? Math.max(0, ...history.Queries.map((q) => q ?? 0)) : 0;
  const now = history ? history.Queries[history.Queries.length - 1] ?? 0 : 0;
  box.append(el('div', { class: 'chart-legend', text: `DNS: ${now.toFixed(2)} queries/s now, at most ${top.toFixed(2)}` }));
  box.append(chart(history, 720, 120));
  box.append(el('div', { class: 'chart-legend', text: `Last hour, a point every ${state.stepSeconds} s: DNS queries per second (line) and instances passing, warning, critical (bars).` }));
  return box;
}

// === one service ===

async function followService(name, signal) {
  let index = 0;
  let pause = 1000;
  while (!signal.aborted) {
    try {
      const query = index > 0 ? `?index=${index}&wait=${WAIT}` : '';
      const answer = await api(`/v1/health/service/${encodeURIComponent(name)}${query}`, signal);
      index = nextIndex(index, answer.index);
      pause = 1000;
      renderInstances(answer.body);
    } catch (error) {
      if (signal.aborted) return;
      index = 0;
      // A refused token is the list's to handle; this one waits and tries again.
      await sleep(pause);
      pause = Math.min(pause * 2, 10000);
    }
  }
}

function ago(time) {
  const seconds = Math.max(0, Math.round((Date.now() - time) / 1000));
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function renderInstances(entries) {
  const list = el('div');
  if (entries.length === 0) list.append(el('p', { text: 'No instance is registered under this name.' }));
  for (const entry of entries) {
    const checks = entry.Checks.filter((c) => c.CheckID !== 'serfHealth');
    const order = ['passing', 'warning', 'critical'];
    const health = checks.reduce((worst, c) => (order.indexOf(c.Status) > order.indexOf(worst) ? c.Status : worst), 'passing');
    const service = entry.Service;
    const address = `${service.Address || entry.Node.Address}:${service.Port}`;
    const box = el('div', { class: 'instance', 'data-instance': service.ID, 'data-health': health },
      el('h3', {},
        el('span', { text: service.ID }),
        el('span', { class: `badge ${health}`, text: health }),
        entry.Flapping ? el('span', { class: 'badge flapping', text: 'flapping', title: 'held out of DNS until stable' }) : null,
        el('span', { class: 'address', text: address })),
      el('div', {}, ...service.Tags.map((tag) => el('span', { class: 'tag', text: tag }))));
    for (const check of checks) {
      const changed = Date.parse(check.LastUpdate);
      box.append(el('div', { class: 'check', 'data-check': check.CheckID, 'data-status': check.Status },
        el('span', { class: `badge ${check.Status}`, text: check.Status }),
        el('span', { text: `${check.Name} (${check.Type || 'check'})` }),
        el('span', { class: 'when', 'data-time': String(changed), title: check.LastUpdate, text: Number.isNaN(changed) ? '' : `changed ${ago(changed)}` }),
        el('pre', { text: check.Output || '(no output yet)' })));
    }
    list.append(box);
  }
  $('instances').replaceChildren(list);
}

// The "changed … ago" times move on by themselves.
setInterval(() => {
  for (const when of document.querySelectorAll('.when[data-time]')) {
    const time = Number(when.dataset.time);
    if (!Number.isNaN(time)) when.textContent = `changed ${ago(time)}`;
  }
}, 1000);

// === which view ===

function show() {
  if (!$('login').hidden) return;
  $('overview').hidden = state.selected !== null;
  $('detail').hidden = state.selected === null;
}

function route() {
  const match = location.hash.match(/^#\/service\/(.+)$/);
  let selected = null;
  try {
    selected = match ? decodeURIComponent(match[1]) : null;
  } catch (error) {
    selected = null; // a malformed link: the list
  }
  if (selected === state.selected) return;
  state.selected = selected;
  if (state.detailAbort) state.detailAbort.abort();
  state.detailAbort = null;
  if (selected !== null) {
    $('detail-name').textContent = selected;
    $('instances').replaceChildren();
    $('detail-chart').replaceChildren(bigChart(state.history[selected]));
    state.detailAbort = new AbortController();
    followService(selected, state.detailAbort.signal);
    loadHistory();
  }
  show();
}

$('back').addEventListener('click', () => { location.hash = ''; });
window.addEventListener('hashchange', route);
route();
followServices();
