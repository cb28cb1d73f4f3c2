// weir dashboard: polls the admin port's JSON views every 2 s and draws them. Read-only;
// every string from the server goes into the page as text (textContent), never as markup.
'use strict';

(() => {
  const POLL_MS = 2000;
  const KEEP_SEC = 300;
  const TOTAL = 'All routes';
  const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'];
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const CHART_W = 200;
  const CHART_H = 64;

  const state = {
    paused: false,
    timer: null,
    polling: false,
    scrolled: false,
    windowSec: 300,
    bounds: [],
    prev: new Map(), // route -> {t, codes, cumulative, count}
    history: new Map(), // route -> [{t, rate, rate5, e5, e4, p50, p99}]
    cards: new Map(), // route -> card elements
    rendered: {}, // table -> JSON of what it shows, to redraw only on change
  };

  // ---- DOM helpers -------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  function badge(text, cls) {
    return el('span', { class: `badge ${cls || ''}` }, text);
  }

  function byId(id) {
    return document.getElementById(id);
  }

  // ---- formatting --------------------------------------------------------------------

  function fmtRate(v) {
    if (v === null || v === undefined) return '–';
    if (v === 0) return '0';
    if (v < 0.1) return v.toFixed(3);
    if (v < 10) return v.toFixed(2);
    return v.toFixed(0);
  }

  function fmtRatio(v) {
    if (v === null || v === undefined) return '–';
    return `${(v * 100).toFixed(v > 0 && v < 0.01 ? 2 : 1)}%`;
  }

  function fmtSeconds(v) {
    if (v === null || v === undefined) return '–';
    if (v < 0.001) return `${(v * 1e6).toFixed(0)} µs`;
    if (v < 1) return `${(v * 1000).toFixed(v < 0.01 ? 2 : 1)} ms`;
    return `${v.toFixed(2)} s`;
  }

  // ---- fetching ----------------------------------------------------------------------

  async function getJSON(path) {
    const res = await fetch(path, { cache: 'no-store', headers: { accept: 'application/json' } });
    if (!res.ok) throw new Error(`${path} answered HTTP ${res.status}`);
    return res.json();
  }

  function showAlert(message) {
    const a = byId('alert');
    if (a.textContent !== message) a.textContent = message;
    a.hidden = false;
  }

  function clearAlert() {
    const a = byId('alert');
    if (!a.hidden) {
      a.hidden = true;
      a.textContent = '';
    }
  }

  async function poll() {
    state.timer = null;
    state.polling = true;
    try {
      const [status, snapshot, backends, stats] = await Promise.all([
        getJSON('/debug/status'),
        getJSON('/debug/snapshot'),
        getJSON('/debug/backends'),
        getJSON('/debug/stats'),
      ]);
      renderHeader(status, stats);
      renderProblems(status);
      renderRoutes(snapshot, status);
      renderBackends(backends);
      updateTraffic(stats);
      clearAlert();
      if (!state.scrolled) {
        // A link to a section (e.g. /#backends) lands there once the page has content.
        state.scrolled = true;
        const target = location.hash && document.getElementById(location.hash.slice(1));
        if (target) target.scrollIntoView();
      }
    } catch (e) {
      showAlert(`Cannot read the admin port (${e.message}); retrying every ${POLL_MS / 1000} s.`);
    }
    state.polling = false;
    if (!state.paused) state.timer = setTimeout(poll, POLL_MS);
  }

  // ---- header and problems -----------------------------------------------------------

  function renderHeader(status, stats) {
    byId('version').textContent = `snapshot v${stats.version}${status.ready ? '' : ' (not ready)'}`;
    byId('updated').textContent = `updated ${new Date(stats.timeMs).toLocaleTimeString()}`;
  }

  function failing(obj) {
    return (obj.conditions || []).filter((c) => c.status === 'False');
  }

  function objectName(o) {
    return `${o.kind} ${o.namespace}/${o.name}`;
  }

  function changed(table, value) {
    const key = JSON.stringify(value);
    if (state.rendered[table] === key) return false;
    state.rendered[table] = key;
    return true;
  }

  function renderProblems(status) {
    const rows = [];
    for (const o of status.objects || []) {
      for (const c of failing(o)) {
        rows.push([objectName(o), `${c.type}: ${c.reason}`, c.message || '']);
      }
    }
    for (const e of status.errors || []) {
      rows.push([`${e.file} (document ${e.document})`, 'Load error', e.reason]);
    }
    if (!changed('problems', rows)) return;
    byId('problems-count').textContent = String(rows.length);
    byId('problems-none').hidden = rows.length > 0;
    const table = byId('problems-table');
    table.hidden = rows.length === 0;
    table.tBodies[0].replaceChildren(
      ...rows.map(([what, cond, msg]) =>
        el('tr', { class: 'invalid' }, el('th', { scope: 'row' }, what), el('td', {}, cond),
          el('td', { class: 'msg' }, msg))),
    );
  }

  // ---- routes ------------------------------------------------------------------------

  function describeMatch(m) {
    const parts = [`${m.path.type} ${m.path.value}`];
    if (m.methods && m.methods.length) parts.push(m.methods.join(','));
    for (const h of m.headers || []) {
      parts.push(`header ${h.name} ${h.type}${h.value === null ? '' : ` ${h.value}`}`);
    }
    for (const q of m.queryParams || []) {
      parts.push(`query ${q.name} ${q.type}${q.value === null ? '' : ` ${q.value}`}`);
    }
    return parts.join(' · ');
  }

  function describeRewrite(rw) {
    if (!rw) return null;
    const parts = [];
    if (rw.replacePrefix !== null && rw.replacePrefix !== undefined) parts.push(`prefix → ${rw.replacePrefix}`);
    if (rw.replaceFullPath !== null && rw.replaceFullPath !== undefined) parts.push(`path → ${rw.replaceFullPath}`);
    if (rw.host) parts.push(`host → ${rw.host}`);
    return parts.join(', ') || null;
  }

  function conditionBadges(view) {
    if (!view) return [badge('no status', 'warn')];
    return (view.conditions || []).map((c) => {
      const cls = c.status === 'True' ? 'good' : c.status === 'False' ? 'bad' : 'warn';
      return badge(`${c.type}${c.status === 'True' ? '' : `=${c.status}`}`, cls);
    });
  }

  function renderRoutes(snapshot, status) {
    const views = new Map();
    for (const o of status.objects || []) {
      if (o.kind === 'Route') views.set(`${o.namespace}/${o.name}`, o);
    }
    const backendNames = new Map((snapshot.backends || []).map((b) => [b.id, b.key]));
    const live = (snapshot.routes && snapshot.routes.routes) || [];
    const liveKeys = new Set(live.map((r) => r.key));
    const model = {
      live: live.map((r) => ({
        key: r.key,
        hosts: r.hosts,
        rules: r.rules.map((x) => ({
          name: x.name,
          matches: x.matches.map(describeMatch),
          backends: x.backends.map((b) => `${backendNames.get(b.id) || `#${b.id}`}${b.weight !== 1 ? ` (weight ${b.weight})` : ''}`),
          filters: x.filters,
          rewrite: describeRewrite(x.rewrite),
        })),
        view: views.get(r.key) || null,
      })),
      // Routes the status knows but the snapshot does not serve: invalid ones.
      missing: [...views.values()].filter((o) => !liveKeys.has(`${o.namespace}/${o.name}`)),
    };
    if (!changed('routes', model)) return;
    byId('routes-count').textContent = String(model.live.length + model.missing.length);
    const rows = [];
    for (const r of model.live) {
      const plugins = r.view ? r.view.effectivePlugins || [] : [];
      const pluginText = plugins.length
        ? plugins.map((p) => `${p.type} (${p.source}, ${p.level})`).join('\n')
        : '–';
      const invalid = r.view && failing(r.view).length > 0;
      r.rules.forEach((rule, i) => {
        const tr = el('tr', { class: [i === 0 ? 'group-start' : '', invalid ? 'invalid' : ''].join(' ').trim() || null, 'data-route': r.key });
        if (i === 0) {
          const span = String(r.rules.length);
          tr.append(
            el('th', { scope: 'row', rowspan: span }, r.key),
            el('td', { rowspan: span }, r.hosts.length ? r.hosts.join(', ') : 'any host'),
          );
        }
        tr.append(
          el('td', {}, rule.name),
          el('td', {}, rule.matches.map((m, j) => [j ? el('br') : null, el('code', {}, m)])),
          el('td', {}, rule.backends.length ? rule.backends.join(', ') : '–',
            rule.rewrite ? el('div', { class: 'quiet' }, `rewrite: ${rule.rewrite}`) : null,
            rule.filters.length ? el('div', { class: 'quiet' }, `filters: ${rule.filters.join(', ')}`) : null),
        );
        if (i === 0) {
          const span = String(r.rules.length);
          const msgs = r.view ? failing(r.view).map((c) => el('div', { class: 'msg bad' }, c.message)) : [];
          tr.append(
            el('td', { rowspan: span, class: 'plugins' }, pluginText.split('\n').map((t, j) => [j ? el('br') : null, t])),
            el('td', { rowspan: span }, conditionBadges(r.view), msgs),
          );
        }
        rows.push(tr);
      });
    }
    for (const o of model.missing) {
      const key = `${o.namespace}/${o.name}`;
      const msgs = failing(o).map((c) => el('div', { class: 'msg bad' }, `${c.reason}: ${c.message}`));
      rows.push(el('tr', { class: 'group-start invalid', 'data-route': key },
        el('th', { scope: 'row' }, key),
        el('td', { colspan: '5', class: 'msg' }, 'Not served: ', msgs),
        el('td', {}, conditionBadges(o))));
    }
    byId('routes-table').tBodies[0].replaceChildren(...rows);
  }

  // ---- backends ----------------------------------------------------------------------

  function renderBackends(data) {
    const backends = data.backends || [];
    if (!changed('backends', backends)) return;
    byId('backends-count').textContent = String(backends.length);
    const rows = [];
    for (const b of backends) {
      const eps = b.endpoints.length ? b.endpoints : [null];
      const circuit = b.circuit
        ? badge(`${b.circuit.state} (${b.circuit.failures} failures)`, b.circuit.state === 'Closed' ? 'good' : 'bad')
        : el('span', { class: 'quiet' }, 'no breaker');
      eps.forEach((e, i) => {
        const tr = el('tr', { class: i === 0 ? 'group-start' : null, 'data-backend': b.backend });
        if (i === 0) {
          const span = String(eps.length);
          tr.append(
            el('th', { scope: 'row', rowspan: span }, b.backend, b.policy ? el('div', { class: 'quiet' }, `policy ${b.policy}`) : null,
              b.panic ? el('div', { class: 'bad' }, 'panic: every endpoint used') : null),
            el('td', { rowspan: span }, `${b.loadBalancer}${b.protocol ? ` · ${b.protocol}` : ''}${b.tls ? ' · TLS' : ''}`),
            el('td', { rowspan: span }, circuit),
          );
        }
        if (e === null) {
          tr.append(el('td', { colspan: '4', class: 'bad' }, 'no endpoint'));
        } else {
          const cls = e.health === 'healthy' ? 'good' : 'bad';
          const health = [badge(e.health, cls)];
          if (e.ejectedForMs) health.push(` for ${(e.ejectedForMs / 1000).toFixed(1)} s`);
          if (e.slowStart) health.push(badge('slow start', 'warn'));
          tr.append(el('td', {}, el('code', {}, e.address)), el('td', {}, health),
            el('td', {}, String(e.inFlight)), el('td', {}, String(e.ejections)));
        }
        rows.push(tr);
      });
    }
    byId('backends-table').tBodies[0].replaceChildren(...rows);
  }

  // ---- traffic -----------------------------------------------------------------------

  /** Like Prometheus' histogram_quantile: linear interpolation within the bucket. */
  function quantile(q, cumulative, count) {
    if (!count) return null;
    const rank = q * count;
    const bounds = state.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (cumulative[i] >= rank) {
        const lower = i === 0 ? 0 : bounds[i - 1];
        const below = i === 0 ? 0 : cumulative[i - 1];
        const inBucket = cumulative[i] - below;
        return inBucket > 0 ? lower + ((bounds[i] - lower) * (rank - below)) / inBucket : lower;
      }
    }
    return bounds[bounds.length - 1]; // in the +Inf bucket: the highest finite bound
  }

  function deltaOf(route, r, t) {
    const prev = state.prev.get(route);
    const cur = { t, codes: r.codes, cumulative: r.duration.cumulative, count: r.duration.count };
    state.prev.set(route, cur);
    if (!prev || t <= prev.t) return null;
    const codes = cur.codes.map((c, i) => c - prev.codes[i]);
    const cumulative = cur.cumulative.map((c, i) => c - (prev.cumulative[i] || 0));
    const count = cur.count - prev.count;
    if (codes.some((c) => c < 0) || cumulative.some((c) => c < 0) || count < 0) return null; // reset
    return { dt: t - prev.t, codes, cumulative, count };
  }

  function pointOf(t, d) {
    if (!d) return { t, rate: null, rate5: null, e5: null, e4: null, p50: null, p99: null };
    const n = d.codes.reduce((a, b) => a + b, 0);
    return {
      t,
      rate: n / d.dt,
      rate5: d.codes[4] / d.dt,
      e5: n ? d.codes[4] / n : null,
      e4: n ? d.codes[3] / n : null,
      p50: quantile(0.5, d.cumulative, d.count),
      p99: quantile(0.99, d.cumulative, d.count),
    };
  }

  function record(route, point) {
    let h = state.history.get(route);
    if (!h) state.history.set(route, (h = []));
    h.push(point);
    while (h.length && h[0].t < point.t - KEEP_SEC) h.shift();
  }

  function updateTraffic(stats) {
    state.bounds = stats.bounds;
    const t = stats.timeMs / 1000;
    const total = { dt: 0, codes: [0, 0, 0, 0, 0], cumulative: stats.bounds.map(() => 0), count: 0 };
    let anyDelta = false;
    let requests = 0;
    const seen = new Set();
    for (const r of stats.routes) {
      seen.add(r.route);
      requests += r.requests;
      const d = deltaOf(r.route, r, t);
      if (d) {
        anyDelta = true;
        total.dt = d.dt;
        d.codes.forEach((c, i) => { total.codes[i] += c; });
        d.cumulative.forEach((c, i) => { total.cumulative[i] += c; });
        total.count += d.count;
      }
      const point = pointOf(t, d);
      record(r.route, point);
      updateCard(r.route, r.requests, point);
    }
    const totalPoint = pointOf(t, anyDelta ? total : null);
    record(TOTAL, totalPoint);
    updateCard(TOTAL, requests, totalPoint);
    for (const route of [...state.cards.keys()]) {
      if (route !== TOTAL && !seen.has(route)) {
        state.cards.get(route).root.remove();
        state.cards.delete(route);
        state.history.delete(route);
        state.prev.delete(route);
      }
    }
  }

  function metric(label, name) {
    const dd = el('dd', { 'data-metric': name }, '–');
    return { nodes: el('div', {}, el('dt', {}, label), dd), dd };
  }

  function chartBlock(title, keys) {
    const legend = el('p', { class: 'legend', 'aria-hidden': 'true' }, title, ': ',
      keys.map((k, i) => [i ? ' · ' : '', el('span', { class: `k${i}` }, `— ${k}`)]));
    const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${CHART_W} ${CHART_H}`, role: 'img' });
    chart.setAttribute('aria-label', title);
    return { nodes: el('figure', {}, legend, chart), chart };
  }

  function makeCard(route) {
    const isTotal = route === TOTAL;
    const m = {
      requests: metric('Requests', 'requests'),
      rate: metric('Requests/s', 'rate'),
      e5: metric('5xx ratio', 'error-ratio'),
      e4: metric('4xx ratio', '4xx-ratio'),
      p50: metric('p50', 'p50'),
      p99: metric('p99', 'p99'),
    };
    const rateChart = chartBlock('Requests/s', ['all', '5xx']);
    const latChart = chartBlock('Latency', ['p50', 'p99']);
    const root = el('article', { class: `card${isTotal ? ' total' : ''}`, 'data-route': route },
      el('h3', {}, route),
      el('dl', {}, Object.values(m).map((x) => x.nodes)),
      el('div', { class: 'charts' }, rateChart.nodes, latChart.nodes));
    const cards = byId('cards');
    if (isTotal) {
      cards.prepend(root);
    } else {
      // Keep the cards sorted by route after the total.
      const after = [...cards.children].find((c) => c.dataset.route !== TOTAL && c.dataset.route > route);
      cards.insertBefore(root, after || null);
    }
    const card = { root, m, rateChart: rateChart.chart, latChart: latChart.chart };
    state.cards.set(route, card);
    return card;
  }

  function updateCard(route, requests, point) {
    const card = state.cards.get(route) || makeCard(route);
    const set = (x, text) => { if (x.dd.textContent !== text) x.dd.textContent = text; };
    set(card.m.requests, String(requests));
    set(card.m.rate, fmtRate(point.rate));
    set(card.m.e5, fmtRatio(point.e5));
    set(card.m.e4, fmtRatio(point.e4));
    set(card.m.p50, fmtSeconds(point.p50));
    set(card.m.p99, fmtSeconds(point.p99));
    const h = state.history.get(route) || [];
    drawChart(card.rateChart, h, ['rate', 'rate5'], fmtRate, `Requests per second of ${route}`);
    drawChart(card.latChart, h, ['p50', 'p99'], fmtSeconds, `Latency p50 and p99 of ${route}`);
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  /** A line chart of `keys` of the points in the chosen window; null values break lines. */
  function drawChart(chart, points, keys, fmt, label) {
    const W = CHART_W;
    const H = CHART_H;
    const top = 4;
    const bottom = H - 12;
    // The window, or less while the page has not been open that long (at least 10 s).
    const now = points.length ? points[points.length - 1].t : 0;
    const first = points.length ? points[0].t : 0;
    const span = Math.min(state.windowSec, Math.max(now - first, 10));
    const from = now - span;
    const shown = points.filter((p) => p.t >= from);
    let max = 0;
    for (const p of shown) for (const k of keys) if (p[k] !== null && p[k] > max) max = p[k];
    const ymax = niceMax(max);
    const x = (t) => ((t - from) / span) * W;
    const y = (v) => bottom - (v / ymax) * (bottom - top);
    const nodes = [
      svg('line', { class: 'grid', x1: 0, x2: W, y1: bottom, y2: bottom }),
      svg('line', { class: 'grid', x1: 0, x2: W, y1: top, y2: top }),
    ];
    const axisTop = svg('text', { class: 'axis', x: 2, y: top + 9 });
    axisTop.textContent = fmt(ymax);
    const axisBottom = svg('text', { class: 'axis', x: 2, y: H - 1 });
    axisBottom.textContent = `${span >= 120 ? `${(span / 60).toFixed(span % 60 ? 1 : 0)} min` : `${Math.round(span)} s`} ago`;
    const axisNow = svg('text', { class: 'axis', x: W - 2, y: H - 1, 'text-anchor': 'end' });
    axisNow.textContent = 'now';
    nodes.push(axisTop, axisBottom, axisNow);
    const last = {};
    keys.forEach((k, i) => {
      let d = '';
      let pen = false;
      for (const p of shown) {
        if (p[k] === null || p[k] === undefined) { pen = false; continue; }
        d += `${pen ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p[k]).toFixed(1)}`;
        pen = true;
        last[k] = p[k];
      }
      if (d) nodes.push(svg('path', { class: `s${i}`, d, 'data-series': k }));
    });
    chart.replaceChildren(...nodes);
    const summary = keys.map((k) => `${k} ${fmt(last[k] === undefined ? null : last[k])}`).join(', ');
    chart.setAttribute('aria-label', `${label}: ${summary}`);
    chart.dataset.points = String(shown.filter((p) => keys.some((k) => p[k] !== null)).length);
  }

  // ---- controls ----------------------------------------------------------------------

  function redrawCharts() {
    for (const [route, card] of state.cards) {
      const h = state.history.get(route) || [];
      drawChart(card.rateChart, h, ['rate', 'rate5'], fmtRate, `Requests per second of ${route}`);
      drawChart(card.latChart, h, ['p50', 'p99'], fmtSeconds, `Latency p50 and p99 of ${route}`);
    }
  }

  function setup() {
    const pause = byId('pause');
    pause.addEventListener('click', () => {
      state.paused = !state.paused;
      pause.setAttribute('aria-pressed', String(state.paused));
      pause.textContent = state.paused ? 'Resume updates' : 'Pause updates';
      if (state.paused && state.timer) {
        clearTimeout(state.timer);
        state.timer = null;
      } else if (!state.paused && !state.timer && !state.polling) {
        poll();
      }
    });
    for (const b of document.querySelectorAll('[data-window]')) {
      b.addEventListener('click', () => {
        state.windowSec = Number(b.dataset.window);
        for (const o of document.querySelectorAll('[data-window]')) {
          o.setAttribute('aria-pressed', String(o === b));
        }
        redrawCharts();
      });
    }
    poll();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', setup);
  } else {
    setup();
  }
})();
