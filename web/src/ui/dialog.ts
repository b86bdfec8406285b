// Modal dialogs on the native <dialog> element: it traps focus, closes on Escape and restores focus
// to whatever opened it, which is most of what accessible modals need.
import { h, icon, uid } from '../lib/dom.js';
import { raiseToasts } from './toast.js';

export interface DialogHandle {
  element: HTMLDialogElement;
  body: HTMLElement;
  footer: HTMLElement;
  close(): void;
  /** Resolves when the dialog closes, however it closed. */
  closed: Promise<void>;
}

export function openDialog(options: {
  title: string;
  description?: string;
  body?: Node;
  wide?: boolean;
  /** Called on Escape / the close button; return false to keep the dialog open (e.g. while busy). */
  canClose?: () => boolean;
}): DialogHandle {
  const titleId = uid('dialog-title');
  const body = h('div', { class: 'dialog-body' });
  if (options.body) body.append(options.body);
  const footer = h('div', { class: 'dialog-footer' });
  const closeButton = h(
    'button',
    { type: 'button', class: 'btn btn-icon btn-ghost dialog-close', 'aria-label': 'Close' },
    icon('close'),
  );
  const element = h(
    'dialog',
    { class: options.wide ? 'dialog dialog-wide' : 'dialog', 'aria-labelledby': titleId },
    h(
      'div',
      { class: 'dialog-header' },
      h(
        'div',
        null,
        h('h2', { id: titleId, class: 'dialog-title' }, options.title),
        options.description ? h('p', { class: 'dialog-description' }, options.description) : null,
      ),
      closeButton,
    ),
    body,
    footer,
  );
  let resolveClosed: () => void = () => undefined;
  const closed = new Promise<void>((resolve) => {
    resolveClosed = resolve;
  });
  const close = () => {
    if (element.open) element.close();
  };
  closeButton.addEventListener('click', () => {
    if (options.canClose?.() === false) return;
    close();
  });
  element.addEventListener('cancel', (event) => {
    if (options.canClose?.() === false) event.preventDefault();
  });
  element.addEventListener('close', () => {
    element.remove();
    resolveClosed();
  });
  document.body.append(element);
  element.showModal();
  raiseToasts();
  return { element, body, footer, close, closed };
}

/** "Delete instance?" — resolves true when the person confirms. */
export function confirmDialog(options: {
  title: string;
  message: string;
  confirmLabel: string;
  danger?: boolean;
}): Promise<boolean> {
  const dialog = openDialog({ title: options.title, body: h('p', null, options.message) });
  let confirmed = false;
  const cancel = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');
  const ok = h(
    'button',
    { type: 'button', class: options.danger ? 'btn btn-danger' : 'btn btn-primary' },
    options.confirmLabel,
  );
  cancel.addEventListener('click', () => dialog.close());
  ok.addEventListener('click', () => {
    confirmed = true;
    dialog.close();
  });
  dialog.footer.append(cancel, ok);
  // The safe choice gets the focus.
  cancel.focus();
  return dialog.closed.then(() => confirmed);
}
