// The desktop's Share dialog: make a link (view only or control, how long, once or many times), copy it
// (it is shown this once: the gateway keeps only its hash), and see the session's shares with who is
// watching through each, live, with a Revoke that closes their viewers on every gateway and an End per
// guest that closes that one guest's viewer.
import { describeError } from '../api/api-error.js';
import type { SessionShare, ShareMode } from '../api/types.js';
import type { AppContext } from '../app-context.js';
import { h, uid } from '../lib/dom.js';
import { openDialog } from '../ui/dialog.js';
import { toast } from '../ui/toast.js';

const EXPIRY: Array<{ minutes: number; label: string }> = [
  { minutes: 15, label: '15 minutes' },
  { minutes: 60, label: '1 hour' },
  { minutes: 240, label: '4 hours' },
  { minutes: 1440, label: '1 day' },
];

export function shareDialog(ctx: AppContext, sessionId: string): Promise<void> {
  const modeId = uid('share-mode');
  const mode = h(
    'select',
    { id: modeId, class: 'select', 'data-testid': 'share-mode' },
    h('option', { value: 'view' }, 'View only — they watch'),
    h('option', { value: 'control' }, 'Control — they can type and use the mouse'),
  );
  const expiryId = uid('share-expiry');
  const expiry = h('select', { id: expiryId, class: 'select', 'data-testid': 'share-expiry' });
  for (const e of EXPIRY) {
    const option = h('option', { value: String(e.minutes) }, e.label);
    option.selected = e.minutes === 60;
    expiry.append(option);
  }
  const singleUseId = uid('share-once');
  const singleUse = h('input', { id: singleUseId, type: 'checkbox', 'data-testid': 'share-single-use' });
  const create = h(
    'button',
    { type: 'button', class: 'btn btn-primary', 'data-testid': 'share-create' },
    'Create link',
  );
  const link = h('input', {
    type: 'text',
    readonly: true,
    class: 'input',
    'data-testid': 'share-link',
    'aria-label': 'Share link',
  });
  const copy = h(
    'button',
    { type: 'button', class: 'btn btn-secondary', 'data-testid': 'share-copy' },
    'Copy link',
  );
  const created = h(
    'div',
    { class: 'field', hidden: true },
    h('p', { class: 'field-hint' }, 'Copy it now: it is shown only once.'),
    h('div', { class: 'field-row' }, link, copy),
  );
  const list = h('ul', { class: 'share-list', 'data-testid': 'share-list' });

  const body = h(
    'div',
    null,
    h('div', { class: 'field' }, h('label', { for: modeId }, 'Guests may'), mode),
    h('div', { class: 'field' }, h('label', { for: expiryId }, 'Link works for'), expiry),
    h('div', { class: 'field-row' }, singleUse, h('label', { for: singleUseId }, 'Single use (one guest)')),
    h('div', { class: 'field-row' }, create),
    created,
    h('h3', null, 'Shares of this desktop'),
    list,
  );
  const dialog = openDialog({
    title: 'Share this desktop',
    description: 'Anyone with the link can open this desktop until it expires or you revoke it.',
    body,
  });

  const renderList = (shares: SessionShare[]) => {
    if (shares.length === 0) {
      list.replaceChildren(h('li', { class: 'field-hint' }, 'No shares yet.'));
      return;
    }
    list.replaceChildren(
      ...shares.map((s) => {
        const item = h(
          'li',
          { class: 'share-item', 'data-testid': 'share-item', 'data-status': s.status },
          h(
            'span',
            null,
            `${s.mode === 'view' ? 'View only' : 'Control'} · ${s.status}` +
              (s.status === 'active' ? ` until ${new Date(s.expiresAt).toLocaleTimeString()}` : ''),
          ),
        );
        if (s.guests.length > 0) {
          const watchers = h('ul', { class: 'share-guests', 'data-testid': 'share-guests' });
          for (const g of s.guests) {
            const end = h(
              'button',
              {
                type: 'button',
                class: 'btn btn-secondary btn-sm',
                'data-testid': 'share-guest-end',
                'aria-label': `End ${g.name}'s view`,
              },
              'End',
            );
            end.addEventListener('click', () => {
              end.disabled = true;
              ctx.api.endGuest(sessionId, g.viewerId).then(
                () => {
                  toast(`${g.name} was disconnected.`, 'success');
                  void refresh();
                },
                (e: unknown) => {
                  end.disabled = false;
                  toast(describeError(e), 'error');
                },
              );
            });
            watchers.append(
              h(
                'li',
                { class: 'share-guest', 'data-testid': 'share-guest' },
                h('span', null, `watching: ${g.name}`),
                end,
              ),
            );
          }
          item.append(watchers);
        }
        if (s.status === 'active' || s.guests.length > 0) {
          const revoke = h(
            'button',
            { type: 'button', class: 'btn btn-danger btn-sm', 'data-testid': 'share-revoke' },
            'Revoke',
          );
          revoke.addEventListener('click', () => {
            revoke.disabled = true;
            ctx.api.revokeShare(s.id).then(
              () => {
                toast('Share revoked: its guests were disconnected.', 'success');
                void refresh();
              },
              (e: unknown) => {
                revoke.disabled = false;
                toast(describeError(e), 'error');
              },
            );
          });
          item.append(revoke);
        }
        return item;
      }),
    );
  };
  const refresh = () =>
    ctx.api.listShares(sessionId).then(renderList, (e: unknown) => toast(describeError(e), 'error'));
  void refresh();
  // Who is watching, live while the dialog is open.
  const timer = setInterval(() => void refresh(), 3000);
  void dialog.closed.then(() => clearInterval(timer));

  create.addEventListener('click', () => {
    create.disabled = true;
    ctx.api
      .createShare(sessionId, {
        mode: mode.value as ShareMode,
        expiresInMinutes: Number(expiry.value),
        singleUse: singleUse.checked,
      })
      .then(
        (share) => {
          link.value = new URL(share.url, location.origin).href;
          created.hidden = false;
          link.select();
          void refresh();
        },
        (e: unknown) => toast(describeError(e), 'error'),
      )
      .finally(() => {
        create.disabled = false;
      });
  });
  copy.addEventListener('click', () => {
    const done = navigator.clipboard?.writeText(link.value);
    if (!done) {
      link.select();
      toast('Select the link and copy it.', 'info');
      return;
    }
    done.then(
      () => toast('Link copied.', 'success'),
      () => toast('The browser refused the clipboard: select the link and copy it.', 'error'),
    );
  });
  return dialog.closed;
}
