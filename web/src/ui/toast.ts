// Short notices in a polite live region at the corner ("Instance saved"). Errors that need action stay
// inline next to what failed; toasts are for confirmations and background events.
import { h, icon } from '../lib/dom.js';

type Tone = 'info' | 'success' | 'error';

let region: HTMLElement | null = null;

function container(): HTMLElement {
  if (region && document.body.contains(region)) return region;
  region = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
  document.body.append(region);
  return region;
}

export function toast(message: string, tone: Tone = 'info', ms = 4500): void {
  const item = h(
    'div',
    { class: `toast toast-${tone}` },
    icon(tone === 'error' ? 'alert' : tone === 'success' ? 'check' : 'signal', 16),
    h('span', null, message),
  );
  container().append(item);
  window.setTimeout(() => {
    item.classList.add('toast-leaving');
    window.setTimeout(() => item.remove(), 200);
  }, ms);
}
