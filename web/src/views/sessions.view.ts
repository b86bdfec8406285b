// Active sessions: which desktops are running, on which instance, since when and idle for how long;
// resume one or end it (which stops the desktop on the instance). Refreshes itself while visible.
import { describeError } from '../api/api-error.js';
import type { ActiveSession } from '../api/types.js';
import type { AppContext, View } from '../app-context.js';
import { h, icon } from '../lib/dom.js';
import { desktopLabel, formatAgo, formatDateTime, formatDuration } from '../lib/format.js';
import { confirmDialog } from '../ui/dialog.js';
import { toast } from '../ui/toast.js';

const REFRESH_MS = 15_000;

export function sessionsView(ctx: AppContext): View {
  let sessions: ActiveSession[] = [];
  let destroyed = false;

  const body = h('div', { class: 'sessions', 'aria-busy': 'true' });
  const element = h(
    'section',
    { class: 'page' },
    h(
      'div',
      { class: 'page-header' },
      h(
        'div',
        null,
        h('h1', { class: 'page-title' }, 'Sessions'),
        h(
          'p',
          { class: 'muted' },
          'Desktops running on your instances. A desktop nobody views is ended after a while.',
        ),
      ),
    ),
    body,
  );

  const load = async () => {
    try {
      const list = await ctx.api.activeSessions();
      if (destroyed) return;
      sessions = list;
      render();
    } catch (e) {
      if (destroyed) return;
      body.setAttribute('aria-busy', 'false');
      body.replaceChildren(h('div', { class: 'empty card', role: 'alert' }, h('p', null, describeError(e))));
    }
  };

  const render = () => {
    body.setAttribute('aria-busy', 'false');
    if (sessions.length === 0) {
      body.replaceChildren(
        h(
          'div',
          { class: 'empty card' },
          h('div', { class: 'empty-art', 'aria-hidden': 'true' }, icon('monitor', 40)),
          h('h2', null, 'No desktops running'),
          h('p', { class: 'muted' }, 'Connect to an instance to start one.'),
          h('a', { href: '/instances', 'data-link': true, class: 'btn btn-primary' }, 'Go to instances'),
        ),
      );
      return;
    }
    const now = Date.now();
    const rows = sessions.map((s) => {
      const end = h(
        'button',
        { type: 'button', class: 'btn btn-ghost btn-sm btn-danger-ghost', 'data-testid': 'end-session' },
        icon('power', 16),
        'End',
      );
      end.addEventListener('click', () => endSession(s, end));
      const idleMs = now - Date.parse(s.lastActivityAt);
      return h(
        'tr',
        { 'data-testid': 'session', 'data-session-id': s.id },
        h(
          'th',
          { scope: 'row' },
          h('span', { class: 'session-name' }, s.instanceName ?? 'Instance'),
          h('span', { class: 'muted mono' }, s.display !== null ? ` :${s.display}` : ''),
        ),
        h('td', null, desktopLabel(s.desktopEnvironment)),
        h(
          'td',
          { title: formatDateTime(s.startedAt ?? s.createdAt ?? null) },
          formatAgo(s.startedAt ?? s.createdAt ?? null, now),
        ),
        h(
          'td',
          null,
          s.viewers > 0
            ? h(
                'span',
                { class: 'badge badge-live' },
                h('span', { class: 'dot', 'aria-hidden': 'true' }),
                'in use',
              )
            : formatDuration(idleMs),
        ),
        h('td', null, String(s.viewers)),
        h(
          'td',
          { class: 'row-actions' },
          h(
            'a',
            {
              href: `/desktop/${encodeURIComponent(s.id)}`,
              'data-link': true,
              class: 'btn btn-primary btn-sm',
              'data-testid': 'resume',
            },
            icon('play', 16),
            'Resume',
          ),
          end,
        ),
      );
    });
    body.replaceChildren(
      h(
        'div',
        { class: 'card table-card' },
        h(
          'table',
          { class: 'table' },
          h('caption', { class: 'visually-hidden' }, 'Active sessions'),
          h(
            'thead',
            null,
            h(
              'tr',
              null,
              h('th', { scope: 'col' }, 'Instance'),
              h('th', { scope: 'col' }, 'Desktop'),
              h('th', { scope: 'col' }, 'Started'),
              h('th', { scope: 'col' }, 'Idle'),
              h('th', { scope: 'col' }, 'Viewers'),
              h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')),
            ),
          ),
          h('tbody', null, ...rows),
        ),
      ),
    );
  };

  const endSession = (s: ActiveSession, button: HTMLButtonElement) => {
    void confirmDialog({
      title: `End the desktop on ${s.instanceName ?? 'this instance'}?`,
      message:
        'The desktop and every program running in it will be closed on the instance. Unsaved work is lost.',
      confirmLabel: 'End session',
      danger: true,
    }).then((yes) => {
      if (!yes) return;
      button.disabled = true;
      ctx.api.endSession(s.id).then(
        () => {
          sessions = sessions.filter((x) => x.id !== s.id);
          render();
          toast('Session ended.', 'success');
        },
        (e: unknown) => {
          button.disabled = false;
          toast(describeError(e), 'error');
        },
      );
    });
  };

  const tick = () => {
    if (document.visibilityState === 'visible') void load();
  };
  body.replaceChildren(
    h(
      'div',
      { class: 'card skeleton', 'aria-hidden': 'true' },
      h('div', { class: 'skeleton-line w-60' }),
      h('div', { class: 'skeleton-line w-40' }),
    ),
  );
  void load();
  const timer = window.setInterval(tick, REFRESH_MS);
  document.addEventListener('visibilitychange', tick);

  return {
    element,
    title: 'Sessions',
    destroy() {
      destroyed = true;
      window.clearInterval(timer);
      document.removeEventListener('visibilitychange', tick);
    },
  };
}
