// A short ordered list of steps with their state ("Connecting over SSH ✓ → Starting the desktop …").
// Every step is drawn from the start, so the list never changes size while it progresses.
import { h, icon } from '../lib/dom.js';

export type StepState = 'pending' | 'active' | 'done' | 'failed';

export interface ProgressSteps {
  element: HTMLElement;
  set(index: number, state: StepState, detail?: string): void;
}

export function progressSteps(labels: string[]): ProgressSteps {
  const items = labels.map((label, i) => {
    const marker = h('span', { class: 'step-marker', 'aria-hidden': 'true' }, String(i + 1));
    const status = h('span', { class: 'visually-hidden' });
    const detail = h('span', { class: 'step-detail' });
    const li = h(
      'li',
      { class: 'step step-pending' },
      marker,
      h('span', { class: 'step-text' }, h('span', { class: 'step-label' }, label, status), detail),
    );
    return { li, marker, status, detail, index: i };
  });
  const element = h('ol', { class: 'steps', 'aria-label': 'Progress' }, ...items.map((i) => i.li));
  return {
    element,
    set(index, state, text) {
      const item = items[index];
      if (!item) return;
      item.li.className = `step step-${state}`;
      if (state === 'active') item.li.setAttribute('aria-current', 'step');
      else item.li.removeAttribute('aria-current');
      item.marker.replaceChildren(
        state === 'done'
          ? icon('check', 14)
          : state === 'failed'
            ? icon('close', 14)
            : state === 'active'
              ? h('span', { class: 'spinner spinner-sm' })
              : String(index + 1),
      );
      item.status.textContent = {
        pending: '',
        active: ' (in progress)',
        done: ' (done)',
        failed: ' (failed)',
      }[state];
      item.detail.textContent = text ?? '';
    },
  };
}
