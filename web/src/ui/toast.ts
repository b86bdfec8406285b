// Short notices in a polite live region at the corner ("Instance saved"). Errors that need action stay
// inline next to what failed; toasts are for confirmations and background events. The region is a
// manual popover, re-shown for each notice, so it sits in the top layer above any open modal dialog
// and its backdrop (a plain fixed element is drawn under them: issue 14 point 12).
import { h, icon } from '../lib/dom.js';

type Tone = 'info' | 'success' | 'error';

let region: HTMLElement | null = null;

function container(): HTMLElement {
  if (region && document.body.contains(region)) return region;
  region = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite', 'data-testid': 'toasts' });
  if ('popover' in region) region.popover = 'manual';
  document.body.append(region);
  return region;
}

/** Puts the region on top of the top layer (after a dialog opened over it). */
function raise(el: HTMLElement): void {
  if (!('showPopover' in el)) return;
  try {
    if (el.matches(':popover-open')) el.hidePopover();
    el.showPopover();
  } catch {
    // not connected or popovers unsupported: it stays a fixed element
  }
}

export function toast(message: string, tone: Tone = 'info', ms = 4500): void {
  const item = h(
    'div',
    { class: `toast toast-${tone}` },
    icon(tone === 'error' ? 'alert' : tone === 'success' ? 'check' : 'signal', 16),
    h('span', null, message),
  );
  const el = container();
  el.append(item);
  raise(el);
  window.setTimeout(() => {
    item.classList.add('toast-leaving');
    window.setTimeout(() => {
      item.remove();
      if (el.childElementCount === 0 && 'hidePopover' in el && el.matches(':popover-open')) el.hidePopover();
    }, 200);
  }, ms);
}

/** After a modal dialog opened: keep the notices above it. */
export function raiseToasts(): void {
  if (region && region.childElementCount > 0) raise(region);
}

/** Removes every notice (e.g. on signing out: "Session ended." must not follow onto the sign-in page). */
export function clearToasts(): void {
  region?.replaceChildren();
}
