// Active sessions: which desktops are running, on which instance, since when and idle for how long;
// resume one or end it (which stops the desktop on the instance). Refreshes itself while visible.
// Below them the connection history (issue 10): past sessions, why each ended and what it moved, a
// page at a time from GET /api/sessions/history (the session records, no second source).
import { describeError } from '../api/api-error.js';
import type { ActiveSession, SessionHistoryEntry } from '../api/types.js';
import type { AppContext, View } from '../app-context.js';
import { h, icon } from '../lib/dom.js';
import {
  desktopLabel,
  endReasonLabel,
  formatAgo,
  formatBytes,
  formatDateTime,
  formatDuration,
} from '../lib/format.js';
import { confirmDialog } from '../ui/dialog.js';
import { toast } from '../ui/toast.js';

const REFRESH_MS = 15_000;

export function sessionsView(ctx: AppContext): View {
  let sessions: ActiveSession[] = [];
  let destroyed = false;

  const body = h('div', { class: 'sessions', 'aria-busy': 'true' });
  const history = historySection(ctx);
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
    history.element,
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
          history.reload();
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
      history.destroy();
      window.clearInterval(timer);
      document.removeEventListener('visibilitychange', tick);
    },
  };
}

function historySection(ctx: AppContext): { element: HTMLElement; reload(): void; destroy(): void } {
  let destroyed = false;
  let cursor: string | null = null;
  let generation = 0;
  const tbody = h('tbody');
  const status = h('p', { class: 'muted', role: 'status' });
  const more = h(
    'button',
    { type: 'button', class: 'btn btn-secondary btn-sm', hidden: true, 'data-testid': 'history-more' },
    'Show older',
  );
  const row = (s: SessionHistoryEntry) =>
    h(
      'tr',
      { 'data-testid': 'history-session', 'data-session-id': s.id },
      h('th', { scope: 'row' }, s.instanceName ?? h('span', { class: 'muted' }, 'deleted instance')),
      h('td', null, desktopLabel(s.desktopEnvironment)),
      h('td', { title: formatDateTime(s.startedAt) }, formatDateTime(s.startedAt) || '—'),
      h('td', { title: formatDateTime(s.endedAt) }, formatDateTime(s.endedAt) || '—'),
      h('td', null, formatDuration(s.durationSeconds * 1000)),
      h('td', { 'data-testid': 'history-reason' }, endReasonLabel(s.endReason)),
      h('td', null, `${formatBytes(s.bytesToViewer)} / ${formatBytes(s.bytesFromViewer)}`),
    );
  const fetchPage = (reset: boolean) => {
    const mine = ++generation;
    more.disabled = true;
    ctx.api.sessionHistory(reset ? undefined : (cursor ?? undefined)).then(
      (page) => {
        if (destroyed || mine !== generation) return;
        if (reset) tbody.replaceChildren();
        tbody.append(...page.items.map(row));
        cursor = page.nextCursor;
        more.hidden = cursor === null;
        more.disabled = false;
        table.hidden = tbody.childElementCount === 0;
        status.textContent = tbody.childElementCount === 0 ? 'No past sessions yet.' : '';
      },
      (e: unknown) => {
        if (destroyed || mine !== generation) return;
        more.disabled = false;
        status.textContent = describeError(e);
      },
    );
  };
  more.addEventListener('click', () => fetchPage(false));
  const table = h(
    'table',
    { class: 'table admin-table', hidden: true },
    h('caption', { class: 'visually-hidden' }, 'Past sessions'),
    h(
      'thead',
      null,
      h(
        'tr',
        null,
        ...['Instance', 'Desktop', 'Started', 'Ended', 'Duration', 'Why it ended', 'Sent / received'].map(
          (c) => h('th', { scope: 'col' }, c),
        ),
      ),
    ),
    tbody,
  );
  const element = h(
    'section',
    { class: 'history', 'aria-labelledby': 'history-title' },
    h('h2', { id: 'history-title', class: 'section-title' }, 'History'),
    h('div', { class: 'card table-card' }, table, status, more),
  );
  fetchPage(true);
  return {
    element,
    reload: () => fetchPage(true),
    destroy: () => {
      destroyed = true;
    },
  };
}
