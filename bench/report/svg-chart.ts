// A hand-written SVG chart of a result: sessions (x) against input→echo p99 (left panel) and gateway
// CPU in cores (right panel), one line per stack. No chart library: two panels of polylines and ticks.
import type { BenchResult, StepResult } from './result.js';

const W = 960;
const H = 380;
const PANEL_W = 400;
const PANEL_H = 260;
const TOP = 60;
const LEFTS = [70, 550];
const COLOURS: Record<string, string> = {
  direct: '#7f7f7f',
  diy: '#d62728',
  bare: '#ff7f0e',
  clouddesk: '#1f77b4',
};
const LABELS: Record<string, string> = {
  direct: 'direct TCP (floor)',
  diy: 'websockify + ssh -L',
  bare: 'bare ws → ssh2',
  clouddesk: 'CloudDesk',
};

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** 1, 2, 5 × 10^n ticks covering 0..max. */
export function ticks(max: number): number[] {
  if (max <= 0) return [0, 1];
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = 0; v <= max * 1.0001 + step && out.length < 12; v += step) out.push(Number(v.toPrecision(6)));
  return out;
}

export function fmt(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2).replace(/\.?0+$/, '') || '0';
}

interface Series {
  stack: string;
  points: [number, number][];
}

function panel(left: number, title: string, unit: string, series: Series[], xMax: number): string {
  const yMax = Math.max(...series.flatMap((s) => s.points.map((p) => p[1])), 0);
  const yTicks = ticks(yMax);
  const xTicks = ticks(xMax);
  const yTop = yTicks[yTicks.length - 1]!;
  const xTop = xTicks[xTicks.length - 1]!;
  const x = (v: number) => left + (v / xTop) * PANEL_W;
  const y = (v: number) => TOP + PANEL_H - (v / yTop) * PANEL_H;
  const parts: string[] = [];
  parts.push(
    `<text x="${left + PANEL_W / 2}" y="${TOP - 14}" text-anchor="middle" font-weight="bold">${esc(title)}</text>`,
  );
  for (const t of yTicks) {
    parts.push(`<line x1="${left}" y1="${y(t)}" x2="${left + PANEL_W}" y2="${y(t)}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${left - 6}" y="${y(t) + 4}" text-anchor="end">${fmt(t)}</text>`);
  }
  for (const t of xTicks) {
    parts.push(`<text x="${x(t)}" y="${TOP + PANEL_H + 18}" text-anchor="middle">${fmt(t)}</text>`);
  }
  parts.push(
    `<rect x="${left}" y="${TOP}" width="${PANEL_W}" height="${PANEL_H}" fill="none" stroke="#999"/>`,
    `<text x="${left + PANEL_W / 2}" y="${TOP + PANEL_H + 38}" text-anchor="middle">concurrent sessions</text>`,
    `<text transform="translate(${left - 48} ${TOP + PANEL_H / 2}) rotate(-90)" text-anchor="middle">${esc(unit)}</text>`,
  );
  for (const s of series) {
    if (s.points.length === 0) continue;
    const colour = COLOURS[s.stack] ?? '#000';
    const pts = s.points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ');
    parts.push(`<polyline points="${pts}" fill="none" stroke="${colour}" stroke-width="2"/>`);
    for (const [a, b] of s.points) {
      parts.push(
        `<circle cx="${x(a).toFixed(1)}" cy="${y(b).toFixed(1)}" r="3.5" fill="${colour}"><title>${esc(
          `${LABELS[s.stack] ?? s.stack}: ${a} sessions → ${fmt(b)} ${unit}`,
        )}</title></circle>`,
      );
    }
  }
  return parts.join('\n');
}

function seriesOf(steps: StepResult[], value: (s: StepResult) => number | null): Series[] {
  const stacks = [...new Set(steps.map((s) => s.stack))];
  return stacks.map((stack) => ({
    stack,
    points: steps
      .filter((s) => s.stack === stack)
      .map((s) => [s.sessions.liveAtWindowEnd || s.users, value(s)] as [number, number | null])
      .filter((p): p is [number, number] => p[1] !== null)
      .sort((p, q) => p[0] - q[0]),
  }));
}

export function renderChart(result: BenchResult): string {
  const steps = result.steps;
  const xMax = Math.max(...steps.map((s) => s.sessions.liveAtWindowEnd || s.users), 1);
  const rtt = seriesOf(steps, (s) => s.rttMs.p99);
  const cpu = seriesOf(steps, (s) => (s.stack === 'direct' ? null : s.cpu.gatewayCores));
  const stacks = [...new Set(steps.map((s) => s.stack))];
  const legend = stacks
    .map(
      (s, i) =>
        `<g transform="translate(${70 + i * 220} ${H - 16})"><rect width="14" height="4" y="-4" fill="${COLOURS[s] ?? '#000'}"/><text x="20" y="0">${esc(LABELS[s] ?? s)}</text></g>`,
    )
    .join('\n');
  const m = result.machine;
  const subtitle = `${steps[0]?.profile ?? ''} profile · ${m.cores} × ${m.cpuModel} · ${m.date.slice(0, 10)} · ${result.label}`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">
<rect width="${W}" height="${H}" fill="#fff"/>
<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(subtitle)}</text>
${panel(LEFTS[0]!, 'input → echo round trip, p99', 'ms', rtt, xMax)}
${panel(LEFTS[1]!, 'gateway CPU (websockify + ssh for the peer)', 'cores', cpu, xMax)}
${legend}
</svg>
`;
}
