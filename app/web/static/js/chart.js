// Charts with uPlot (vendored from node_modules, pinned in package-lock.json), loaded on first use.

import { h } from './dom.js';

let uPlotModule = null;
async function uPlot() {
  if (!uPlotModule) uPlotModule = (await import('/ui/vendor/uplot/uPlot.esm.js')).default;
  return uPlotModule;
}

function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

function axisStyle() {
  const text = cssVar('--muted', '#666');
  const grid = cssVar('--border', '#ddd');
  return { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
}

// Tick steps in seconds; uPlot's own jump from 1 to 5 minutes leaves a phone-wide chart one label.
const TIME_INCRS = [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const clockSeconds = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** One short line per tick (uPlot's default adds a second line with the date, and the labels collide). */
export function timeTicks(splits, incrSeconds) {
  const format = incrSeconds < 60 ? clockSeconds : clock;
  return splits.map((v) => format.format(new Date(v * 1000)));
}

/**
 * A time chart that follows its container's width.
 * series: [{label, color: '--pv', scale: 'W'|'%', dash?: [on, off]}]; data: [[unix seconds...], [values...]...].
 * A dashed series stays visible where it runs on top of another (e.g. load covered by battery discharge).
 */
export async function timeChart(container, { title, series, height = 240, minSpan = 300 }) {
  const U = await uPlot();
  const scales = [...new Set(series.map((s) => s.scale))];
  const axes = [
    { ...axisStyle(), space: 60, incrs: TIME_INCRS, values: (_u, splits, _i, _space, incr) => timeTicks(splits, incr) },
    ...scales.map((scale, i) => ({
      ...axisStyle(),
      scale,
      side: i === 0 ? 3 : 1,
      grid: i === 0 ? axisStyle().grid : { show: false },
      size: 60,
      values: (_u, ticks) => ticks.map((v) => (scale === '%' ? `${v}%` : formatPower(v))),
    })),
  ];
  const opts = {
    title,
    width: Math.max(280, container.clientWidth || 600),
    height,
    scales: {
      // A live chart starts with a few seconds of data: show at least `minSpan` seconds, ending now.
      x: {
        time: true,
        range: (_u, min, max) => {
          const now = Date.now() / 1000;
          return min == null || max == null ? [now - minSpan, now] : [Math.min(min, max - minSpan), max];
        },
      },
      ...Object.fromEntries(scales.map((s) => [s, s === '%' ? { range: [0, 100] } : {}])),
    },
    series: [
      { label: 'Time' },
      ...series.map((s) => ({
        label: s.label,
        scale: s.scale,
        stroke: cssVar(s.color, '#888'),
        width: s.dash ? 2.5 : 2,
        dash: s.dash,
        spanGaps: false,
        value: (_u, v) => (v == null ? '—' : s.scale === '%' ? `${v.toFixed(1)} %` : formatPower(v)),
      })),
    ],
    axes,
    legend: { live: true, markers: { dash: (u, i) => (u.series[i].dash && u.series[i].dash.length ? 'dashed' : 'solid') } },
    cursor: { drag: { x: false, y: false } },
  };
  const empty = [[], ...series.map(() => [])];
  const plot = new U(opts, empty, container);
  container.uplot = plot; // the browser tests read the drawn tick labels from it
  const resize = new ResizeObserver(() => {
    const width = container.clientWidth;
    if (width > 0) plot.setSize({ width, height });
  });
  resize.observe(container);
  return {
    setData: (data) => plot.setData(data),
    destroy: () => {
      resize.disconnect();
      plot.destroy();
    },
  };
}

/** A bar chart over categories (e.g. months); values may be negative. */
export async function barChart(container, { title, labels, series, height = 220, format = String }) {
  const U = await uPlot();
  const xs = labels.map((_, i) => i);
  const bars = U.paths.bars({ size: [0.6, 60] });
  const plot = new U(
    {
      title,
      width: Math.max(280, container.clientWidth || 600),
      height,
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] } },
      series: [
        { label: 'Month', value: (_u, i) => (i == null ? '—' : labels[i]) },
        ...series.map((s) => ({
          label: s.label,
          stroke: cssVar(s.color, '#888'),
          fill: cssVar(s.color, '#888'),
          paths: bars,
          points: { show: false },
          value: (_u, v) => (v == null ? '—' : format(v)),
        })),
      ],
      axes: [
        { ...axisStyle(), values: (_u, ticks) => ticks.map((i) => labels[i] ?? ''), splits: () => xs },
        { ...axisStyle(), size: 70, values: (_u, ticks) => ticks.map(format) },
      ],
      cursor: { drag: { x: false, y: false } },
    },
    [xs, ...series.map((s) => s.values)],
    container,
  );
  const resize = new ResizeObserver(() => {
    const width = container.clientWidth;
    if (width > 0) plot.setSize({ width, height });
  });
  resize.observe(container);
  return { destroy: () => { resize.disconnect(); plot.destroy(); } };
}

export function formatPower(w) {
  if (w == null) return '';
  return Math.abs(w) >= 1000 ? `${(w / 1000).toFixed(1)} kW` : `${Math.round(w)} W`;
}

/** A chart container with an accessible name and a text alternative that the caller keeps current. */
export function chartBox(name) {
  const box = h('div', { class: 'chart', role: 'img', 'aria-label': name });
  return box;
}
