// The minas dashboard: a hash-routed page over /api (dashboard/api.h).
// Live: the overview asks /api/changes for what changed since the last change
// number it saw, every two seconds, and updates its counts, charts and table
// in place (zoom and selection stay); nothing is reloaded whole.
'use strict';
const token = new URLSearchParams(location.search).get('token');
const view = document.getElementById('view');
let timer = null;
let charts = [];

async function api(path, params) {
  const q = new URLSearchParams(params || {});
  const headers = token ? { Authorization: 'Bearer ' + token } : {};
  const r = await fetch('api/' + path + (q.toString() ? '?' + q : ''), { headers });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.status);
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'onclick') e.onclick = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ''));
  return e;
}
const pct = (v) => (v === null || v === undefined ? '-' : (100 * v).toFixed(2) + '%');
const num = (v, d) => (v === null || v === undefined ? '-' : Number(v).toFixed(d ?? 0));
const link = (hash, text) => el('a', { href: '#' + hash }, text);

// Chart.js 3 (Debian's) draws every dataset grey unless told: each gets the
// next color of one palette, its fill the same color, lighter.
const palette = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b'];
Chart.register({
  id: 'minasColors',
  beforeUpdate(chart) {
    chart.data.datasets.forEach((d, i) => {
      const c = palette[i % palette.length];
      if (!d.borderColor) d.borderColor = c;
      if (!d.backgroundColor) d.backgroundColor = c + '40';
    });
  },
});

function reset() {
  if (timer) clearInterval(timer);
  timer = null;
  for (const c of charts) c.destroy();
  charts = [];
  view.replaceChildren();
}

function lineChart(canvas, label, xTitle) {
  const c = new Chart(canvas, {
    type: 'line',
    data: { datasets: [{ label, data: [], stepped: true, pointRadius: 2 }] },
    options: { animation: false, parsing: false, responsive: false,
               scales: { x: { type: 'linear', title: { display: true, text: xTitle } },
                         y: { title: { display: true, text: 'validation accuracy' } } } },
  });
  charts.push(c);
  return zoomable(c);
}

// Drag across a chart to zoom its x axis to that range; double-click to see
// everything again. The range lives in the chart's options, so data that
// arrives later (update('none')) keeps it.
function zoomable(chart) {
  const canvas = chart.canvas;
  let from = null;
  canvas.addEventListener('mousedown', (ev) => { from = ev.offsetX; });
  canvas.addEventListener('mouseup', (ev) => {
    if (from === null) return;
    const a = Math.min(from, ev.offsetX), b = Math.max(from, ev.offsetX);
    from = null;
    if (b - a < 6) return;  // a click, not a drag
    const x = chart.options.scales.x;
    x.min = chart.scales.x.getValueForPixel(a);
    x.max = chart.scales.x.getValueForPixel(b);
    chart.update('none');
  });
  canvas.addEventListener('dblclick', () => {
    delete chart.options.scales.x.min;
    delete chart.options.scales.x.max;
    chart.update('none');
  });
  canvas.title = 'drag to zoom, double-click to reset';
  return chart;
}

// The validation cell of a trial: its accuracy, or for a pruned one the
// rung and the accuracy that cut it.
function validation(t) {
  if (t.status === 'pruned' && t.pruned_at)
    return 'pruned at ' + (+t.pruned_at.at.toFixed(3)) + ' ep: ' + pct(t.pruned_at.val_acc);
  return pct(t.val_acc);
}

function since(seconds) {
  if (seconds === null || seconds === undefined) return '-';
  const s = Math.round(seconds);
  return s >= 3600 ? Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min'
    : s >= 60 ? Math.floor(s / 60) + ' min ' + (s % 60) + ' s' : s + ' s';
}

async function experiments() {
  reset();
  document.getElementById('where').textContent = '';
  const list = await api('experiments');
  const t = el('table', { id: 'experiments' },
    el('tr', {}, ...['experiment', 'status', 'strategy', 'done', 'running', 'failed', 'best'].map((h) => el('th', {}, h))));
  for (const e of list) {
    t.append(el('tr', {}, el('td', {}, link('/e/' + encodeURIComponent(e.name), e.name)),
      el('td', {}, e.status), el('td', {}, e.strategy), el('td', { class: 'num' }, e.counts.done),
      el('td', { class: 'num' }, e.counts.running), el('td', { class: 'num' }, e.counts.failed),
      el('td', { class: 'num' }, pct(e.best_val_acc))));
  }
  view.append(el('h2', {}, 'Experiments'), t);
}

async function overview(name) {
  reset();
  document.getElementById('where').textContent = ' / ' + name;
  const o = await api('experiment', { experiment: name });
  const counts = el('p', { class: 'counts', id: 'counts' });
  const best = el('p', { id: 'best' });
  const budget = el('p', { id: 'budget' });
  const byTime = el('canvas', { class: 'chart', width: 520, height: 280 });
  const byTrials = el('canvas', { class: 'chart', width: 520, height: 280 });
  const table = el('table', { id: 'trials' });
  view.append(el('h2', {}, name), counts, best, budget,
    el('div', { class: 'charts' }, byTime, byTrials),
    el('p', {}, link('/e/' + encodeURIComponent(name) + '/pareto', 'Pareto front'), ' · ',
      link('/e/' + encodeURIComponent(name) + '/failures', 'failures'), ' · ',
      link('/e/' + encodeURIComponent(name) + '/workers', 'workers'), ' · ',
      link('/e/' + encodeURIComponent(name) + '/internals', 'search internals'), ' · ',
      link('/e/' + encodeURIComponent(name) + '/trials', 'all trials'), ' · ',
      link('/e/' + encodeURIComponent(name) + '/data', 'data validation')),
    el('h3', {}, 'Trials, latest changes first'), table);
  const c1 = lineChart(byTime, 'best so far', 'seconds');
  const c2 = lineChart(byTrials, 'best so far', 'trials finished');
  function show(ov) {
    const c = ov.counts;
    counts.replaceChildren(...['total', 'done', 'running', 'queued', 'pruned', 'failed'].map(
      (k) => el('span', { 'data-count': k }, k + ' ' + c[k])));
    best.replaceChildren(ov.best ? el('span', {}, 'best ', pct(ov.best.val_acc), ' (trial ',
      link('/e/' + encodeURIComponent(name) + '/t/' + ov.best.number, String(ov.best.number)), ') ',
      el('code', {}, ov.best.arch)) : 'no finished trial yet');
    // The search's own seconds (every run of it, the one going on included)
    // and its trials; a budget shows only where it can end the search.
    const b = ov.budget;
    const running = ov.status === 'running';
    const ends = b.ends_by === 'time' ? (running ? 'the time budget ends the search' : 'ended by its time budget')
      : b.ends_by === 'trials' ? (running ? 'the trial budget ends the search' : 'ended by its trial budget')
      : running ? 'no budget: it runs until stopped' : 'stopped before either budget';
    budget.replaceChildren('budget used: ', el('span', { id: 'budget-trials' },
      b.trials_used + (b.trials !== null && b.ends_by !== 'time' ? ' of ' + b.trials : '') + ' trials'), ', ',
      el('span', { id: 'budget-seconds' }, since(b.seconds_used) + (b.seconds !== null ? ' of ' + since(b.seconds) : '')),
      ' (', el('span', { id: 'budget-ends' }, ends), ')');
    // The curve holds the improvements; it runs on, flat, to now and to the
    // trials finished now.
    const byTime = ov.best_so_far.map((p) => ({ x: p.seconds, y: p.best }));
    const byCount = ov.best_so_far.map((p) => ({ x: p.trials, y: p.best }));
    const finished = c.done + c.failed + c.pruned;
    if (byTime.length && ov.elapsed > byTime[byTime.length - 1].x)
      byTime.push({ x: ov.elapsed, y: byTime[byTime.length - 1].y });
    if (byCount.length && finished > byCount[byCount.length - 1].x)
      byCount.push({ x: finished, y: byCount[byCount.length - 1].y });
    c1.data.datasets[0].data = byTime;
    c2.data.datasets[0].data = byCount;
    c1.update('none');
    c2.update('none');
  }
  show(o);
  // The table: the latest changed trials; rows are replaced in place by number.
  const rows = new Map();
  table.append(el('tr', {}, ...['trial', 'status', 'validation', 'params', 'latency ms', 'architecture'].map((h) => el('th', {}, h))));
  function upsert(t) {
    const tr = el('tr', { 'data-number': t.number },
      el('td', {}, link('/e/' + encodeURIComponent(name) + '/t/' + t.number, String(t.number))),
      el('td', {}, t.status), el('td', { class: 'num' }, validation(t)),
      el('td', { class: 'num' }, num(t.params)), el('td', { class: 'num' }, num(t.latency_ms, 3)),
      el('td', {}, el('code', {}, t.arch)));
    const old = rows.get(t.number);
    if (old) old.remove();
    rows.set(t.number, tr);
    table.firstChild.after(tr);
    while (rows.size > 200) {
      const [n, r] = rows.entries().next().value;
      r.remove();
      rows.delete(n);
    }
  }
  const first = await api('trials', { experiment: name, sort: 'seq', order: 'desc', limit: 100 });
  for (const t of first.trials.reverse()) upsert(t);
  let seq = o.seq;
  async function poll() {
    try {
      let more = true;
      let changed = false;
      while (more) {
        const ch = await api('changes', { experiment: name, since: seq });
        for (const t of ch.trials) upsert(t);
        changed = changed || ch.trials.length > 0;
        seq = ch.seq;
        more = ch.more;
      }
      if (changed) show(await api('experiment', { experiment: name }));
    } catch (e) {
      best.append(el('span', { class: 'error' }, ' ' + e.message));
    }
  }
  timer = setInterval(poll, 2000);
}

async function trialPage(name, number) {
  reset();
  document.getElementById('where').textContent = ' / ' + name + ' / trial ' + number;
  const t = await api('trial', { experiment: name, number });
  const facts = el('table', { id: 'trial' });
  const fill = (u) => facts.replaceChildren(...['status', 'arch', 'val_acc', 'test_acc', 'params', 'macs', 'latency_ms', 'device', 'worker', 'fidelity', 'epochs', 'error'].map((k) => {
    const v = k === 'val_acc' ? validation(u) : k.endsWith('acc') ? pct(u[k]) : (u[k] ?? '-');
    return el('tr', {}, el('th', {}, k), el('td', {}, k === 'arch' ? el('code', {}, v) : String(v)));
  }));
  fill(t);
  const curve = el('canvas', { class: 'chart', width: 520, height: 280 });
  const lineage = el('table', { id: 'lineage' },
    el('tr', {}, ...['experiment', 'trial', 'validation', 'mutation to the next', 'architecture'].map((h) => el('th', {}, h))));
  for (const s of t.lineage) {
    lineage.append(el('tr', {}, el('td', {}, s.experiment), el('td', {}, String(s.number)),
      el('td', { class: 'num' }, pct(s.val_acc)), el('td', {}, s.mutation ?? ''), el('td', {}, el('code', {}, s.arch))));
  }
  view.append(el('h2', {}, 'Trial ' + number), facts, curve,
    el('h3', {}, 'Lineage (ancestors, root first)'), lineage,
    el('p', {}, 'mutation from the parent: ', t.mutation ?? '-'),
    el('h3', {}, 'Architecture'), graphSummary(t.graph));
  const c = zoomable(new Chart(curve, {
    type: 'line',
    data: { datasets: [
      { label: 'validation accuracy', data: t.curve.map((e) => ({ x: e.epoch, y: e.val_acc })) },
      { label: 'training loss', data: t.curve.map((e) => ({ x: e.epoch, y: e.train_loss })), yAxisID: 'loss' }] },
    options: { animation: false, parsing: false, responsive: false,
               scales: { x: { type: 'linear', title: { display: true, text: 'epoch' } },
                         loss: { position: 'right' } } },
  }));
  charts.push(c);
  // Live while it may change: when the change cursor shows this trial (a new
  // epoch, its result), its facts and curve are read again and updated in place.
  let seq = t.seq;
  timer = setInterval(async () => {
    try {
      let mine = false;
      for (let more = true; more;) {
        const ch = await api('changes', { experiment: name, since: seq });
        mine = mine || ch.trials.some((x) => String(x.number) === String(number));
        seq = ch.seq;
        more = ch.more;
      }
      if (!mine) return;
      const u = await api('trial', { experiment: name, number });
      fill(u);
      c.data.datasets[0].data = u.curve.map((e) => ({ x: e.epoch, y: e.val_acc }));
      c.data.datasets[1].data = u.curve.map((e) => ({ x: e.epoch, y: e.train_loss }));
      c.update('none');
    } catch (e) {
      facts.append(el('tr', {}, el('td', { class: 'error' }, e.message)));
    }
  }, 2000);
}

// A trial's decisions and its network by block: layers, parameters, MACs,
// output shape and the operations in each.
function graphSummary(g) {
  if (!g) return el('p', {}, 'No layer graph: the experiment has no space document.');
  if (g.error) return el('p', { class: 'error' }, 'The layer graph cannot be built: ' + g.error);
  const decisions = el('table', { id: 'decisions' }, el('tr', {}, el('th', {}, 'decision'), el('th', {}, 'option')));
  for (const d of g.decisions) decisions.append(el('tr', {}, el('td', {}, d.name), el('td', {}, el('code', {}, d.option))));
  const blocks = el('table', { id: 'blocks' },
    el('tr', {}, ...['block', 'layers', 'parameters', 'MACs', 'output', 'operations'].map((h) => el('th', {}, h))));
  for (const b of g.blocks) {
    blocks.append(el('tr', {}, el('td', {}, b.name), el('td', { class: 'num' }, String(b.layers)),
      el('td', { class: 'num' }, num(b.params)), el('td', { class: 'num' }, num(b.macs)), el('td', {}, b.output),
      el('td', {}, Object.entries(b.ops).map(([k, v]) => (v > 1 ? v + ' ' : '') + k).join(', '))));
  }
  blocks.append(el('tr', {}, el('th', {}, 'network'), el('th', { class: 'num' }, String(g.layers)),
    el('th', { class: 'num' }, num(g.params)), el('th', { class: 'num' }, num(g.macs)),
    el('th', {}, g.classes + ' classes'), el('th', {}, 'input ' + g.input)));
  return el('div', { class: 'charts' }, decisions, blocks);
}

// What the strategy thought as results came in: evolution's population (each
// member's score at each snapshot, with its best and mean), REINFORCE's
// reward, baseline and policy entropy. Refreshed every five seconds in place.
async function internalsPage(name) {
  reset();
  document.getElementById('where').textContent = ' / ' + name + ' / search internals';
  const first = await api('internals', { experiment: name });
  const canvas = el('canvas', { class: 'chart', width: 640, height: 320, id: 'internals-chart' });
  const note = el('p', { id: 'internals-note' });
  view.append(el('h2', {}, 'Search internals of ' + name + ' (' + first.strategy + ')'), note, canvas);
  const axes = (y, y2) => {
    const sc = { x: { type: 'linear', title: { display: true, text: 'results told' } },
                 y: { title: { display: true, text: y } } };
    if (y2) sc.entropy = { position: 'right', title: { display: true, text: y2 } };
    return sc;
  };
  let chart;
  if (first.strategy === 'reinforce') {
    chart = new Chart(canvas, {
      type: 'line',
      data: { datasets: [{ label: 'reward (mean since the last point)', data: [], pointRadius: 1 },
                         { label: 'baseline', data: [], pointRadius: 0 },
                         { label: 'policy entropy (nats)', data: [], pointRadius: 0, yAxisID: 'entropy' }] },
      options: { animation: false, parsing: false, responsive: false, scales: axes('reward', 'entropy') },
    });
  } else {
    chart = new Chart(canvas, {
      type: 'scatter',
      data: { datasets: [{ label: 'population members', data: [], pointRadius: 1.5 },
                         { label: 'best in population', data: [], showLine: true, pointRadius: 0 },
                         { label: 'population mean', data: [], showLine: true, pointRadius: 0 }] },
      options: { animation: false, parsing: false, responsive: false, scales: axes('score') },
    });
  }
  charts.push(zoomable(chart));
  function show(r) {
    const snaps = r.snapshots;
    note.textContent = snaps.length ? snaps.length + ' snapshots shown of ' + r.kept + ' kept'
      : r.strategy === 'random' ? 'Random search keeps no state between trials: nothing to show.'
        : 'No snapshot yet: the strategy has been told no result.';
    const d = chart.data.datasets;
    if (r.strategy === 'reinforce') {
      d[0].data = snaps.filter((s) => s.state.reward !== null).map((s) => ({ x: s.results, y: s.state.reward }));
      d[1].data = snaps.filter((s) => s.state.baseline !== null).map((s) => ({ x: s.results, y: s.state.baseline }));
      d[2].data = snaps.map((s) => ({ x: s.results, y: s.state.entropy }));
    } else {
      d[0].data = snaps.flatMap((s) => (s.state.population || []).map((v) => ({ x: s.results, y: v })));
      const full = snaps.filter((s) => (s.state.population || []).length);
      d[1].data = full.map((s) => ({ x: s.results, y: Math.max(...s.state.population) }));
      d[2].data = full.map((s) => ({ x: s.results, y: s.state.population.reduce((a, b) => a + b, 0) / s.state.population.length }));
    }
    chart.update('none');
  }
  show(first);
  timer = setInterval(async () => {
    try { show(await api('internals', { experiment: name })); } catch (e) { note.textContent = e.message; }
  }, 5000);
}

async function paretoPage(name) {
  reset();
  document.getElementById('where').textContent = ' / ' + name + ' / Pareto';
  const x = new URLSearchParams(location.hash.split('?')[1] || '').get('x') || 'params';
  const p = await api('pareto', { experiment: name, x });
  const canvas = el('canvas', { class: 'chart', width: 640, height: 360 });
  view.append(el('h2', {}, 'Validation accuracy against ' + x), el('p', {},
    ...['params', 'macs', 'latency_ms'].map((k) => el('button', { onclick: () => { location.hash = '/e/' + encodeURIComponent(name) + '/pareto?x=' + k; } }, k))), canvas);
  charts.push(new Chart(canvas, {
    type: 'scatter',
    data: { datasets: [
      { label: 'trials', data: p.points.map((q) => ({ x: q[x], y: q.val_acc })), pointRadius: 2 },
      { label: 'front', data: p.front.map((q) => ({ x: q[x], y: q.val_acc })), showLine: true, stepped: true }] },
    options: { animation: false, parsing: false, responsive: false,
               scales: { x: { title: { display: true, text: x } }, y: { title: { display: true, text: 'validation accuracy' } } } },
  }));
}

async function failuresPage(name) {
  reset();
  const f = await api('failures', { experiment: name });
  const t = el('table', {}, el('tr', {}, ...['trial', 'attempt', 'worker', 'error'].map((h) => el('th', {}, h))));
  for (const r of f.failures) t.append(el('tr', {}, el('td', {}, String(r.number)), el('td', {}, String(r.attempt)), el('td', {}, r.worker ?? '-'), el('td', {}, r.error ?? '-')));
  view.append(el('h2', {}, 'Failures of ' + name + ' (' + f.failed + ')'), t);
}

// The pool over time (busy and idle slots, the queue) and each worker now:
// devices, last heartbeat, utilization, what it runs. Refreshed every five
// seconds in place.
async function workersPage(name) {
  reset();
  document.getElementById('where').textContent = ' / ' + name + ' / workers';
  const canvas = el('canvas', { class: 'chart', width: 640, height: 300, id: 'pool-chart' });
  const t = el('table', { id: 'workers' });
  view.append(el('h2', {}, 'Workers of ' + name), canvas, t);
  const chart = zoomable(new Chart(canvas, {
    type: 'line',
    data: { datasets: [
      { label: 'busy slots', data: [], stepped: true, pointRadius: 0, fill: 'origin' },
      { label: 'idle slots', data: [], stepped: true, pointRadius: 0, fill: '-1' },
      { label: 'queued trials', data: [], stepped: true, pointRadius: 0, borderDash: [4, 3] }] },
    options: { animation: false, parsing: false, responsive: false,
               scales: { x: { type: 'linear', title: { display: true, text: 'seconds' } },
                         y: { stacked: false, beginAtZero: true, title: { display: true, text: 'slots' } } } },
  }));
  charts.push(chart);
  async function refresh() {
    const [w, p] = await Promise.all([api('workers', { experiment: name }), api('pool', { experiment: name })]);
    const d = chart.data.datasets;
    d[0].data = p.samples.map((q) => ({ x: q.seconds, y: q.busy }));
    d[1].data = p.samples.map((q) => ({ x: q.seconds, y: q.slots }));  // filled down to busy: the idle band
    d[2].data = p.samples.map((q) => ({ x: q.seconds, y: q.queued }));
    chart.update('none');
    t.replaceChildren(el('tr', {}, ...['worker', 'host', 'pool', 'tags', 'devices', 'last heartbeat', 'utilization', 'running'].map((h) => el('th', {}, h))));
    for (const r of w.workers) {
      t.append(el('tr', {}, el('td', {}, r.name), el('td', {}, r.host), el('td', {}, r.pool),
        el('td', {}, Object.entries(r.tags || {}).map(([k, v]) => k + '=' + v).join(' ')),
        el('td', {}, (r.devices || []).map((x) => x.id || x.name || JSON.stringify(x)).join(', ')),
        el('td', {}, new Date(r.last_seen * 1000).toISOString()), el('td', { class: 'num' }, pct(r.utilization)),
        el('td', {}, (r.running || []).map((x) => x.number + ' on ' + x.device).join(', ') || 'idle')));
    }
  }
  await refresh();
  timer = setInterval(() => refresh().catch((e) => t.append(el('tr', {}, el('td', { class: 'error' }, e.message)))), 5000);
}

// Every trial, sorted and filtered on the server, a page at a time (the
// API's keyset cursor), with a jump to a trial number.
async function trialsPage(name) {
  reset();
  document.getElementById('where').textContent = ' / ' + name + ' / trials';
  const q = new URLSearchParams(location.hash.split('?')[1] || '');
  const sort = q.get('sort') || 'number';
  const status = q.get('status') || '';
  const go = (params) => {
    const p = new URLSearchParams({ sort, status, ...params });
    location.hash = '/e/' + encodeURIComponent(name) + '/trials?' + p;
  };
  const controls = el('p', {},
    'sort: ', ...['number', 'val_acc', 'finished_at'].map((k) => el('button', { onclick: () => go({ sort: k }) }, k)),
    ' status: ', ...['', 'done', 'running', 'queued', 'pruned', 'failed'].map((k) => el('button', { onclick: () => go({ status: k }) }, k || 'all')));
  const jump = el('input', { id: 'jump', size: 6, placeholder: 'trial' });
  jump.onkeydown = (ev) => { if (ev.key === 'Enter') location.hash = '/e/' + encodeURIComponent(name) + '/t/' + jump.value; };
  const params = { experiment: name, sort, limit: 100 };
  if (status) params.status = status;
  if (q.get('after')) params.after = q.get('after');
  const page = await api('trials', params);
  const t = el('table', { id: 'all-trials' }, el('tr', {}, ...['trial', 'status', 'validation', 'params', 'MACs', 'latency ms', 'architecture'].map((h) => el('th', {}, h))));
  for (const r of page.trials) {
    t.append(el('tr', {}, el('td', {}, link('/e/' + encodeURIComponent(name) + '/t/' + r.number, String(r.number))),
      el('td', {}, r.status), el('td', { class: 'num' }, validation(r)), el('td', { class: 'num' }, num(r.params)),
      el('td', { class: 'num' }, num(r.macs)), el('td', { class: 'num' }, num(r.latency_ms, 3)), el('td', {}, el('code', {}, r.arch))));
  }
  view.append(el('h2', {}, 'Trials of ' + name + ', by ' + sort + (status ? ', ' + status : '')), controls,
    el('p', {}, 'open trial: ', jump), t,
    page.next ? el('button', { id: 'next', onclick: () => go({ after: page.next }) }, 'next page') : el('span', {}, 'last page'));
}

// The validation reports of minas adapt for this experiment's data.
async function dataPage(name) {
  reset();
  document.getElementById('where').textContent = ' / ' + name + ' / data validation';
  const d = await api('data_reports', { experiment: name });
  view.append(el('h2', {}, 'Data validation of ' + name));
  if (!d.data_reports.length) view.append(el('p', {}, 'No validation report: not a minas adapt run.'));
  for (const r of d.data_reports) {
    const rep = r.report || {};
    const findings = el('table', {}, el('tr', {}, ...['severity', 'kind', 'message', 'fix'].map((h) => el('th', {}, h))));
    for (const f of rep.findings || []) findings.append(el('tr', {}, el('td', {}, f.severity), el('td', {}, f.kind), el('td', {}, f.message), el('td', {}, f.fix || '')));
    view.append(el('h3', {}, r.location + ': ' + (r.usable ? 'usable' : 'not usable')), findings);
  }
}

async function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('?')[0].split('/').map(decodeURIComponent);
  try {
    if (parts[0] === 'e' && parts.length === 2) await overview(parts[1]);
    else if (parts[0] === 'e' && parts[2] === 't') await trialPage(parts[1], parts[3]);
    else if (parts[0] === 'e' && parts[2] === 'pareto') await paretoPage(parts[1]);
    else if (parts[0] === 'e' && parts[2] === 'failures') await failuresPage(parts[1]);
    else if (parts[0] === 'e' && parts[2] === 'workers') await workersPage(parts[1]);
    else if (parts[0] === 'e' && parts[2] === 'trials') await trialsPage(parts[1]);
    else if (parts[0] === 'e' && parts[2] === 'data') await dataPage(parts[1]);
    else if (parts[0] === 'e' && parts[2] === 'internals') await internalsPage(parts[1]);
    else await experiments();
  } catch (e) {
    view.replaceChildren(el('p', { class: 'error' }, e.message));
  }
}
window.addEventListener('hashchange', route);
route();
