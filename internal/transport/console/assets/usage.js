// Usage over time, from the usage query: requests, errors, rate-limited and latency
// percentiles per interval, for the tenant or one key, with breakdowns by key and by
// operation (usage groupBy).
import {gql, keyList, keyLabel} from './api.js';
import {el, clear, errorBox, fmtNum, fmtMs, fmtShortTime, table} from './ui.js';
import {lineChart} from './chart.js';

const ranges = [
  {id: '1h', label: 'Last hour', ms: 3600e3, interval: 'MINUTE'},
  {id: '6h', label: 'Last 6 hours', ms: 6 * 3600e3, interval: 'MINUTE'},
  {id: '24h', label: 'Last 24 hours', ms: 24 * 3600e3, interval: 'HOUR'},
  {id: '7d', label: 'Last 7 days', ms: 7 * 86400e3, interval: 'HOUR'},
  {id: '30d', label: 'Last 30 days', ms: 30 * 86400e3, interval: 'DAY'},
];
const steps = {MINUTE: 60e3, HOUR: 3600e3, DAY: 86400e3};
const maxBuckets = 10000;

const query = `query Usage($key: ID, $from: Time!, $to: Time!, $interval: UsageInterval!) {
  series: usage(apiKeyID: $key, from: $from, to: $to, interval: $interval) { start requests errors rateLimited quotaExceeded p50Ms p99Ms }
  byKey: usage(apiKeyID: $key, from: $from, to: $to, interval: $interval, groupBy: KEY) { apiKeyID requests errors rateLimited p99Ms }
  byOperation: usage(apiKeyID: $key, from: $from, to: $to, interval: $interval, groupBy: OPERATION) { operationType operationName requests errors rateLimited p99Ms }
}`;

const state = {range: '1h', interval: 'MINUTE', key: ''};

export function render(root, session) {
  const keySel = el('select', {id: 'usage-key'}, el('option', {value: ''}, session.viewer.isAdmin ? 'All keys (every tenant)' : 'All keys'));
  const rangeSel = el('select', {id: 'usage-range'}, ranges.map((r) => el('option', {value: r.id, selected: r.id === state.range}, r.label)));
  const intervalSel = el('select', {id: 'usage-interval'}, Object.keys(steps).map((i) => el('option', {value: i, selected: i === state.interval}, i[0] + i.slice(1).toLowerCase())));
  const refresh = el('button', {type: 'button', class: 'secondary'}, 'Refresh');
  const out = el('div', {class: 'usage-out', 'aria-live': 'polite'});
  root.append(
    el('div', {class: 'view-head'}, el('h2', {}, 'Usage'),
      el('p', {class: 'hint'}, 'From the usage query (rollups per key; by operation from the request log). Refresh to update; the Live tab updates by itself.')),
    el('form', {class: 'controls', onsubmit: (e) => e.preventDefault()},
      el('label', {}, 'Key', keySel),
      el('label', {}, 'Range', rangeSel),
      el('label', {}, 'Interval', intervalSel),
      refresh),
    out);

  keyList(session).then((keys) => {
    for (const k of keys) keySel.append(el('option', {value: k.id, selected: k.id === state.key}, `${k.name} (${k.prefix}…)`));
  });

  function validIntervals() {
    const r = ranges.find((r) => r.id === state.range);
    for (const o of intervalSel.options) o.disabled = r.ms / steps[o.value] > maxBuckets;
    if (r.ms / steps[state.interval] > maxBuckets || r.ms / steps[state.interval] < 2) {
      state.interval = r.interval;
      intervalSel.value = r.interval;
    }
  }

  let seq = 0;
  async function load() {
    const mine = ++seq;
    const r = ranges.find((r) => r.id === state.range);
    const step = steps[state.interval];
    const to = Date.now();
    const from = to - r.ms;
    clear(out, el('p', {class: 'loading'}, 'Loading…'));
    try {
      const [data, keys] = await Promise.all([
        gql(query, {key: state.key || null, from: new Date(from).toISOString(), to: new Date(to).toISOString(), interval: state.interval}),
        keyList(session),
      ]);
      if (mine !== seq) return;
      draw(data, keys, Math.floor(from / step) * step, to, step);
    } catch (e) {
      if (mine === seq) clear(out, errorBox(e));
    }
  }

  function draw(data, keys, t0, t1, step) {
    const byStart = new Map(data.series.map((b) => [Date.parse(b.start), b]));
    const counts = {requests: [], errors: [], rateLimited: []};
    const lat = {p50: [], p99: []};
    for (let t = t0; t <= t1; t += step) {
      const b = byStart.get(t);
      counts.requests.push([t, b ? b.requests : 0]);
      counts.errors.push([t, b ? b.errors : 0]);
      counts.rateLimited.push([t, b ? b.rateLimited + b.quotaExceeded : 0]);
      if (b && b.requests) {
        lat.p50.push([t, b.p50Ms]);
        lat.p99.push([t, b.p99Ms]);
      }
    }
    const sum = (f) => data.series.reduce((a, b) => a + f(b), 0);
    const withDate = t1 - t0 > 86400e3;
    const fmtT = (d) => fmtShortTime(d, withDate);
    const tiles = el('div', {class: 'tiles'},
      tile('Requests', fmtNum(sum((b) => b.requests)), 'tile-requests'),
      tile('Errors', fmtNum(sum((b) => b.errors)), 'tile-errors'),
      tile('Rate limited', fmtNum(sum((b) => b.rateLimited + b.quotaExceeded)), 'tile-limited'),
      tile('Worst p99', fmtMs(Math.max(0, ...data.series.map((b) => b.p99Ms))), 'tile-latency'));
    const per = state.interval.toLowerCase();
    const charts = el('div', {class: 'charts'},
      lineChart([
        {name: 'Requests', cls: 's-requests', points: counts.requests},
        {name: 'Errors', cls: 's-errors', points: counts.errors},
        {name: 'Rate limited', cls: 's-limited', points: counts.rateLimited},
      ], t0, t1, {title: `Requests per ${per}`, fmtTime: fmtT, fmtValue: fmtNum}),
      lineChart([
        {name: 'p50', cls: 's-p50', points: lat.p50},
        {name: 'p99', cls: 's-p99', points: lat.p99},
      ], t0, t1, {title: 'Latency', fmtTime: fmtT, fmtValue: (v) => fmtMs(v)}));

    const fold = (rows, keyOf) => {
      const m = new Map();
      for (const b of rows) {
        const k = keyOf(b);
        const a = m.get(k) || {requests: 0, errors: 0, limited: 0, p99: 0};
        a.requests += b.requests;
        a.errors += b.errors;
        a.limited += b.rateLimited;
        a.p99 = Math.max(a.p99, b.p99Ms);
        m.set(k, a);
      }
      return [...m.entries()].sort((a, b) => b[1].requests - a[1].requests).slice(0, 20);
    };
    const row = (label, a) => el('tr', {}, el('td', {}, label), el('td', {class: 'num'}, fmtNum(a.requests)),
      el('td', {class: 'num'}, fmtNum(a.errors)), el('td', {class: 'num'}, fmtNum(a.limited)), el('td', {class: 'num'}, fmtMs(a.p99)));
    const heads = ['Requests', 'Errors', 'Rate limited', 'Worst p99'];
    const byKey = fold(data.byKey, (b) => b.apiKeyID).map(([id, a]) => row(keyLabel(keys, id), a));
    const byOp = fold(data.byOperation, (b) => b.operationType + ' ' + (b.operationName || '(anonymous)')).map(([op, a]) => row(op, a));
    clear(out, tiles, charts,
      el('div', {class: 'breakdowns'},
        el('section', {}, el('h3', {}, 'By key'), table(['Key', ...heads], byKey, {label: 'Usage by key', empty: 'No requests in this range.'})),
        el('section', {}, el('h3', {}, 'By operation or tag'), table(['Operation', ...heads], byOp, {label: 'Usage by operation', empty: 'No requests in this range.'}))));
  }

  function tile(label, value, cls) {
    return el('div', {class: 'tile ' + cls}, el('span', {class: 'tile-label'}, label), el('span', {class: 'tile-value'}, value));
  }

  keySel.addEventListener('change', () => { state.key = keySel.value; load(); });
  rangeSel.addEventListener('change', () => { state.range = rangeSel.value; validIntervals(); load(); });
  intervalSel.addEventListener('change', () => { state.interval = intervalSel.value; load(); });
  refresh.addEventListener('click', load);
  validIntervals();
  load();
}
