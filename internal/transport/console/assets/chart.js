// A small hand-written SVG line chart: a time axis, a value axis with nice ticks,
// one polyline per series and a legend. It scales with its container (viewBox).

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
  for (const c of children) if (c) n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return n;
}

// niceStep returns a round tick step for a range divided into about n parts.
function niceStep(range, n) {
  const raw = range / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

// timeSteps are the spacings of time ticks, in ms: round seconds, minutes, hours, days.
const timeSteps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800].map((s) => s * 1000);

// timeTicks returns round times between t0 and t1, at most about n of them (n + 1
// when the range is a little more than n steps, as a range floored to its interval is).
function timeTicks(t0, t1, n) {
  const step = timeSteps.find((s) => (t1 - t0) / s <= n + 0.5) || timeSteps[timeSteps.length - 1];
  const out = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) out.push(t);
  return out;
}

// lineChart draws series [{name, cls, points: [[Date, number]]}] from t0 to t1 in a
// figure, at the figure's own width (redrawn when it changes, so text is never
// stretched). opts: {title, height, fmtTime(d) → string, fmtValue(v) → string}.
export function lineChart(series, t0, t1, opts = {}) {
  const figure = document.createElement('figure');
  figure.className = 'chart-figure';
  const cap = document.createElement('figcaption');
  const title = document.createElement('span');
  title.className = 'chart-title';
  title.textContent = opts.title || '';
  cap.append(title);
  for (const s of series) {
    const item = document.createElement('span');
    item.className = 'legend ' + s.cls;
    item.textContent = s.name;
    cap.append(item);
  }
  let width = 0;
  const draw = (w) => {
    width = w;
    const old = figure.querySelector('svg');
    const svg = drawChart(series, t0, t1, opts, w);
    if (old) old.replaceWith(svg);
    else figure.append(svg);
  };
  figure.append(cap);
  draw(640);
  if (typeof ResizeObserver !== 'undefined') {
    new ResizeObserver((entries) => {
      const w = Math.round(entries[0].contentRect.width);
      if (w > 0 && Math.abs(w - width) > 1) draw(w);
    }).observe(figure);
  }
  return figure;
}

function drawChart(series, t0, t1, opts, W) {
  const H = opts.height || 220;
  const m = {l: 52, r: 12, t: 12, b: 26};
  const iw = W - m.l - m.r, ih = H - m.t - m.b;
  let max = 0;
  for (const s of series) for (const [, v] of s.points) max = Math.max(max, v);
  const step = max > 0 ? niceStep(max, 4) : 1;
  const top = Math.max(step, Math.ceil(max / step) * step);
  const x = (t) => m.l + ((t - t0) / Math.max(1, t1 - t0)) * iw;
  const y = (v) => m.t + ih - (v / top) * ih;
  const fmtV = opts.fmtValue || ((v) => String(v));
  const total = series.reduce((a, s) => a + s.points.length, 0);
  const root = svg('svg', {viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart', role: 'img',
    'aria-label': `${opts.title || 'Chart'}: ${series.map((s) => s.name).join(', ')}; ${total ? 'highest ' + fmtV(max) : 'no data in this range'}`});
  const grid = svg('g', {class: 'grid'});
  for (let v = 0; v <= top + step / 2; v += step) {
    grid.append(svg('line', {x1: m.l, x2: W - m.r, y1: y(v), y2: y(v)}));
    grid.append(svg('text', {x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end'}, fmtV(v)));
  }
  // Labels are up to ~90 px wide: a tick every 130 px or more, none so close to an
  // edge that its centred label would be cut.
  const ticks = timeTicks(t0, t1, Math.max(2, Math.floor(iw / 130)));
  for (const t of ticks) {
    const px = x(t);
    if (px - m.l < 40 || W - m.r - px < 40) continue;
    grid.append(svg('line', {x1: px, x2: px, y1: m.t + ih, y2: m.t + ih + 4}));
    grid.append(svg('text', {x: px, y: H - 6, 'text-anchor': 'middle'}, opts.fmtTime ? opts.fmtTime(new Date(t)) : new Date(t).toISOString()));
  }
  root.append(grid);
  for (const s of series) {
    const pts = s.points.map(([t, v]) => [x(+t), y(v)]);
    if (pts.length === 1) {
      root.append(svg('circle', {cx: pts[0][0], cy: pts[0][1], r: 3, class: 'series ' + s.cls}));
    } else if (pts.length) {
      root.append(svg('polyline', {points: pts.map((p) => p.map((n) => n.toFixed(1)).join(',')).join(' '), class: 'series ' + s.cls}));
    }
    for (const [t, v] of s.points) {
      root.append(svg('circle', {cx: x(+t).toFixed(1), cy: y(v).toFixed(1), r: 2, class: 'dot ' + s.cls},
        svg('title', {}, `${s.name}: ${fmtV(v)} at ${new Date(+t).toLocaleString()}`)));
    }
  }
  if (!total) root.append(svg('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'nodata'}, 'No data in this range'));
  return root;
}
