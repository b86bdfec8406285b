// The CloudDesk mark (header, sign-in card).
import { h, icon } from '../lib/dom.js';

export function brandMark(): HTMLElement {
  const mark = h('span', { class: 'brand-mark', 'aria-hidden': 'true' });
  mark.append(icon('monitor', 18));
  return mark;
}
