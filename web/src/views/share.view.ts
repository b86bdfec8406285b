// A share link's landing page (/share#<token>; the token after '#' never reaches a server): whose
// desktop and in which mode, sign in or give a display name as the gateway's SHARE_GUESTS asks, then
// the token is exchanged for a WebSocket ticket and the desktop opens with the guest banner. Every
// reconnect exchanges the token again, so a revoked or expired share ends the guest's view.
import { ApiError, describeError } from '../api/api-error.js';
import type { AppContext, View } from '../app-context.js';
import { h, uid } from '../lib/dom.js';
import { desktopView } from './desktop.view.js';

export function shareView(ctx: AppContext): View {
  const token = location.hash.slice(1);
  const card = h('div', { class: 'overlay-card', 'data-testid': 'share-landing' });
  const element = h(
    'section',
    { class: 'viewer-page' },
    h('h1', { class: 'visually-hidden' }, 'Shared desktop'),
    h('div', { class: 'viewer', 'data-state': 'connecting' }, h('div', { class: 'viewer-overlay' }, card)),
  );
  let desktop: View | null = null;

  const fail = (e: unknown) => {
    card.replaceChildren(
      h('h2', { class: 'overlay-title' }, 'This link does not open a desktop'),
      h('p', { class: 'overlay-text', 'data-testid': 'share-error' }, describeError(e)),
    );
  };

  const open = (displayName?: string) => {
    ctx.api.shareTicket(token, displayName).then((t) => {
      desktop = desktopView(ctx, t.sessionId, {
        ownerName: t.ownerName,
        mode: t.mode,
        websocketUrl: t.websocketUrl,
        ticket: () => ctx.api.shareTicket(token, displayName),
      });
      element.replaceChildren(desktop.element);
      document.title = `${t.ownerName}’s desktop · CloudDesk`;
    }, fail);
  };

  ctx.api.shareInvitation(token).then(
    (invitation) => {
      const what = `${invitation.ownerName} shares their desktop with you${invitation.mode === 'view' ? ' (view only)' : ''}.`;
      if (ctx.user) return open();
      if (invitation.guests === 'signed-in') {
        card.replaceChildren(
          h('h2', { class: 'overlay-title' }, 'Sign in to watch'),
          h('p', { class: 'overlay-text' }, what),
          h(
            'a',
            {
              class: 'btn btn-primary',
              href: `/sign-in?next=${encodeURIComponent(`/share#${token}`)}`,
              'data-link': true,
            },
            'Sign in',
          ),
        );
        return;
      }
      const nameId = uid('guest-name');
      const name = h('input', {
        id: nameId,
        class: 'input',
        maxlength: 64,
        required: true,
        autocomplete: 'nickname',
        'data-testid': 'guest-name',
      });
      const join = h(
        'button',
        { type: 'submit', class: 'btn btn-primary', 'data-testid': 'guest-join' },
        'Join',
      );
      const form = h(
        'form',
        null,
        h('div', { class: 'field' }, h('label', { for: nameId }, 'Your name, shown to the owner'), name),
        join,
      );
      form.addEventListener('submit', (event) => {
        event.preventDefault();
        if (name.value.trim() === '') return;
        open(name.value.trim());
      });
      card.replaceChildren(
        h('h2', { class: 'overlay-title' }, 'Join a shared desktop'),
        h('p', { class: 'overlay-text' }, what),
        form,
      );
      name.focus();
    },
    (e: unknown) => (e instanceof ApiError ? fail(e) : fail(new Error('unexpected'))),
  );

  return {
    element,
    title: 'Shared desktop',
    immersive: true,
    destroy() {
      desktop?.destroy?.();
    },
  };
}
