// The workload, as data: the phases driven on the instance (each a `kind` of the instance script,
// bench/bandwidth/instance-script.ts), their default lengths, and the office minute's weights (issue 13:
// 40 % idle, 40 % typing, 15 % scrolling, 5 % dragging a window).

/** What the instance script knows how to set up, run and tear down. */
export type WorkloadKind = 'idle' | 'typing' | 'scroll' | 'paging' | 'drag' | 'photo' | 'animation';

export interface Phase {
  id: string;
  label: string;
  kind: WorkloadKind;
  /** Default active seconds (the `--secs` / `--phase-secs` options override them). */
  seconds: number;
  /** The page is hidden while the workload runs (and shown again before the screen is compared). */
  pageHidden?: boolean;
}

export const phases: readonly Phase[] = [
  { id: 'idle', label: 'idle', kind: 'idle', seconds: 30 },
  { id: 'typing', label: 'typing in xterm, ~5 chars/s', kind: 'typing', seconds: 20 },
  { id: 'scrolling', label: 'scrolling `find /usr` output, maximized xterm', kind: 'scroll', seconds: 20 },
  { id: 'paging', label: 'paging a document in mousepad, 10 lines/s', kind: 'paging', seconds: 20 },
  { id: 'drag', label: 'dragging a window', kind: 'drag', seconds: 20 },
  { id: 'photo', label: 'photo viewer, a new photo every 3 s', kind: 'photo', seconds: 21 },
  { id: 'animation', label: 'full-screen animation (25 frames/s)', kind: 'animation', seconds: 10 },
  {
    id: 'hidden',
    label: 'hidden tab while `find /usr` scrolls',
    kind: 'scroll',
    seconds: 20,
    pageHidden: true,
  },
];

/** The office minute: share of the time a person spends in each phase. */
export const officeWeights: Readonly<Record<string, number>> = {
  idle: 0.4,
  typing: 0.4,
  scrolling: 0.15,
  drag: 0.05,
};

export function phaseById(id: string): Phase | undefined {
  return phases.find((p) => p.id === id);
}
