// The admin pages (issue 10): users (search, promote/demote, disable/enable), every live session in
// the cluster (end one), and the audit trail (filter by type, actor, target). Offered in the header
// only to admins; the gateway enforces the role on every call (403 FORBIDDEN), so a user who types
// the address sees that answer and nothing else.
import { describeError } from '../api/api-error.js';
import type { AdminSession, AdminUser, AuditEvent, Page } from '../api/types.js';
import type { AppContext, View } from '../app-context.js';
import { h, icon } from '../lib/dom.js';
import { desktopLabel, formatAgo, formatBytes, formatDateTime } from '../lib/format.js';
import { confirmDialog, openDialog } from '../ui/dialog.js';
import { toast } from '../ui/toast.js';

type Tab = 'users' | 'sessions' | 'audit';

const AUDIT_TYPES = [
  'auth.register',
  'auth.sign-in',
  'auth.sign-in-failed',
  'auth.sign-out',
  'auth.sign-out-everywhere',
  'auth.refresh-reuse',
  'user.role-changed',
  'user.disabled',
  'user.enabled',
  'user.invite-created',
  'instance.created',
  'instance.changed',
  'instance.deleted',
  'host-key.pinned',
  'host-key.mismatch',
  'host-key.retrusted',
  'session.started',
  'session.reused',
  'session.ended',
  'viewer.attached',
  'viewer.detached',
];

function shell(tab: Tab, description: string, ...content: HTMLElement[]): HTMLElement {
  const link = (name: Tab, label: string) =>
    h(
      'a',
      {
        href: `/admin/${name}`,
        'data-link': true,
        class: 'nav-link',
        'data-testid': `admin-tab-${name}`,
        ...(name === tab ? { 'aria-current': 'page' } : {}),
      },
      label,
    );
  return h(
    'section',
    { class: 'page' },
    h(
      'div',
      { class: 'page-header' },
      h(
        'div',
        null,
        h('h1', { class: 'page-title' }, 'Administration'),
        h('p', { class: 'muted' }, description),
      ),
    ),
    h(
      'nav',
      { class: 'header-nav admin-tabs', 'aria-label': 'Administration' },
      link('users', 'Users'),
      link('sessions', 'Live sessions'),
      link('audit', 'Audit'),
    ),
    ...content,
  );
}

/** A table that loads pages by cursor, with a "Load more" button while there are more. */
function pagedTable<T>(options: {
  caption: string;
  columns: string[];
  load(cursor?: string): Promise<Page<T>>;
  row(item: T, refresh: () => void): HTMLTableRowElement;
  empty: string;
}): { element: HTMLElement; reload(): void; destroy(): void } {
  let destroyed = false;
  let generation = 0;
  const tbody = h('tbody');
  const status = h('p', { class: 'muted', role: 'status' });
  const more = h('button', { type: 'button', class: 'btn btn-secondary btn-sm', hidden: true }, 'Load more');
  let cursor: string | null = null;
  const fetchPage = (reset: boolean) => {
    const mine = ++generation;
    more.disabled = true;
    options.load(reset ? undefined : (cursor ?? undefined)).then(
      (page) => {
        if (destroyed || mine !== generation) return;
        if (reset) tbody.replaceChildren();
        for (const item of page.items) tbody.append(options.row(item, () => fetchPage(true)));
        cursor = page.nextCursor;
        more.hidden = cursor === null;
        more.disabled = false;
        status.textContent = tbody.childElementCount === 0 ? options.empty : '';
      },
      (e: unknown) => {
        if (destroyed || mine !== generation) return;
        more.disabled = false;
        status.textContent = describeError(e);
        status.setAttribute('role', 'alert');
      },
    );
  };
  more.addEventListener('click', () => fetchPage(false));
  const element = h(
    'div',
    { class: 'card table-card' },
    h(
      'table',
      { class: 'table admin-table' },
      h('caption', { class: 'visually-hidden' }, options.caption),
      h('thead', null, h('tr', null, ...options.columns.map((c) => h('th', { scope: 'col' }, c)))),
      tbody,
    ),
    status,
    more,
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

function actionButton(label: string, testid: string, danger = false): HTMLButtonElement {
  return h(
    'button',
    {
      type: 'button',
      class: danger ? 'btn btn-ghost btn-sm btn-danger-ghost' : 'btn btn-ghost btn-sm',
      'data-testid': testid,
    },
    label,
  );
}

export function adminUsersView(ctx: AppContext): View {
  const search = h('input', {
    type: 'search',
    name: 'q',
    class: 'input',
    placeholder: 'Search by email',
    'aria-label': 'Search users by email',
    'data-testid': 'admin-user-search',
  });
  let q = '';
  const change = (
    user: AdminUser,
    patch: { role?: 'admin' | 'user'; disabled?: boolean },
    done: () => void,
  ) =>
    ctx.api.updateUser(user.id, patch).then(
      (updated) => {
        toast(
          patch.disabled === true
            ? `${updated.email} is disabled and signed out everywhere.`
            : patch.disabled === false
              ? `${updated.email} can sign in again.`
              : `${updated.email} is now ${updated.role === 'admin' ? 'an admin' : 'a user'}.`,
          'success',
        );
        done();
      },
      (e: unknown) => toast(describeError(e), 'error'),
    );
  const table = pagedTable<AdminUser>({
    caption: 'Users',
    columns: ['Email', 'Role', 'Status', 'Created', 'Last sign-in', 'Live sessions', ''],
    empty: 'No user matches.',
    load: (cursor) => ctx.api.adminUsers(q, cursor),
    row: (u, refresh) => {
      const role = actionButton(u.role === 'admin' ? 'Make user' : 'Make admin', 'admin-user-role');
      role.addEventListener('click', () => {
        role.disabled = true;
        void change(u, { role: u.role === 'admin' ? 'user' : 'admin' }, refresh).finally(() => {
          role.disabled = false;
        });
      });
      const disable = actionButton(u.disabled ? 'Enable' : 'Disable', 'admin-user-disable', !u.disabled);
      disable.addEventListener('click', () => {
        const go = () => {
          disable.disabled = true;
          void change(u, { disabled: !u.disabled }, refresh).finally(() => {
            disable.disabled = false;
          });
        };
        if (u.disabled) return go();
        void confirmDialog({
          title: `Disable ${u.email}?`,
          message:
            'They are signed out everywhere at once: their open desktops close and they cannot sign in until enabled again. Their desktops keep running.',
          confirmLabel: 'Disable',
          danger: true,
        }).then((yes) => {
          if (yes) go();
        });
      });
      return h(
        'tr',
        { 'data-testid': 'admin-user', 'data-user-email': u.email },
        h('th', { scope: 'row' }, u.email),
        h('td', null, u.role === 'admin' ? h('span', { class: 'badge badge-ok' }, 'admin') : 'user'),
        h('td', null, u.disabled ? h('span', { class: 'badge badge-error' }, 'disabled') : 'active'),
        h('td', { title: formatDateTime(u.createdAt) }, formatAgo(u.createdAt, Date.now())),
        h('td', { title: formatDateTime(u.lastSignInAt) }, formatAgo(u.lastSignInAt, Date.now())),
        h('td', null, String(u.liveSessions)),
        h('td', { class: 'row-actions' }, role, disable),
      );
    },
  });
  let timer = 0;
  search.addEventListener('input', () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => {
      q = search.value.trim();
      table.reload();
    }, 250);
  });
  return {
    title: 'Users',
    element: shell(
      'users',
      'Everyone with an account here.',
      h('div', { class: 'toolbar-row' }, search, inviteButton(ctx)),
      table.element,
    ),
    destroy() {
      window.clearTimeout(timer);
      table.destroy();
    },
  };
}

export function adminSessionsView(ctx: AppContext): View {
  const table = pagedTable<AdminSession>({
    caption: 'Live sessions',
    columns: ['User', 'Instance', 'Desktop', 'Viewers', 'Started', 'Last activity', 'Sent / received', ''],
    empty: 'No desktop is running.',
    load: (cursor) => ctx.api.adminSessions(cursor),
    row: (s, refresh) => {
      const end = actionButton('End', 'admin-session-end', true);
      end.addEventListener('click', () => {
        void confirmDialog({
          title: `End ${s.user.email}'s desktop on ${s.instance.name}?`,
          message: 'Its viewers are closed and the desktop is stopped on the instance. Unsaved work is lost.',
          confirmLabel: 'End session',
          danger: true,
        }).then((yes) => {
          if (!yes) return;
          end.disabled = true;
          ctx.api.adminEndSession(s.id).then(
            () => {
              toast('Session ended.', 'success');
              refresh();
            },
            (e: unknown) => {
              end.disabled = false;
              toast(describeError(e), 'error');
            },
          );
        });
      });
      const nodes = [...new Set(s.viewers.map((v) => v.node))];
      return h(
        'tr',
        { 'data-testid': 'admin-session', 'data-session-id': s.id },
        h('th', { scope: 'row' }, s.user.email),
        h('td', null, s.instance.name, h('span', { class: 'muted mono' }, ` ${s.instance.host}`)),
        h('td', null, desktopLabel(s.desktopEnvironment), s.display !== null ? ` :${s.display}` : ''),
        h(
          'td',
          { title: nodes.join(', ') },
          String(s.viewers.length),
          nodes.length ? ` (${nodes.join(', ')})` : '',
        ),
        h('td', { title: formatDateTime(s.startedAt) }, formatAgo(s.startedAt, Date.now())),
        h('td', { title: formatDateTime(s.lastActivityAt) }, formatAgo(s.lastActivityAt, Date.now())),
        h('td', null, `${formatBytes(s.bytesToViewer)} / ${formatBytes(s.bytesFromViewer)}`),
        h('td', { class: 'row-actions' }, end),
      );
    },
  });
  return {
    title: 'Live sessions',
    element: shell(
      'sessions',
      'Every desktop running in the cluster, and where its viewers are.',
      table.element,
    ),
    destroy: () => table.destroy(),
  };
}

export function adminAuditView(ctx: AppContext): View {
  const type = h(
    'select',
    { class: 'select', name: 'type', 'aria-label': 'Event type', 'data-testid': 'admin-audit-type' },
    h('option', { value: '' }, 'Every event'),
    ...AUDIT_TYPES.map((t) => h('option', { value: t }, t)),
  );
  const actor = h('input', {
    class: 'input',
    name: 'actor',
    placeholder: 'Actor id',
    'aria-label': 'Actor id',
  });
  const target = h('input', {
    class: 'input',
    name: 'target',
    placeholder: 'Target or user id',
    'aria-label': 'Target or user id',
  });
  const filters = () => ({
    type: type.value || undefined,
    actor: actor.value.trim() || undefined,
    target: target.value.trim() || undefined,
  });
  const table = pagedTable<AuditEvent>({
    caption: 'Audit events',
    columns: ['Time', 'Event', 'Actor', 'From', 'Node', 'Target', 'Details'],
    empty: 'No event matches.',
    load: (cursor) => ctx.api.adminAudit({ ...filters(), cursor }),
    row: (e) =>
      h(
        'tr',
        { 'data-testid': 'admin-audit-event', 'data-type': e.type },
        h('td', { title: e.at }, formatDateTime(e.at)),
        h('th', { scope: 'row', class: 'mono' }, e.type),
        h('td', { class: 'mono' }, e.actor),
        h('td', { class: 'mono' }, e.ip ?? '—'),
        h('td', { class: 'mono' }, e.node),
        h('td', { class: 'mono' }, e.targetId ?? '—'),
        h('td', { class: 'mono audit-details' }, JSON.stringify(e.details)),
      ),
  });
  const apply = h(
    'button',
    { type: 'button', class: 'btn btn-secondary btn-sm', 'data-testid': 'admin-audit-apply' },
    icon('refresh', 16),
    'Apply',
  );
  apply.addEventListener('click', () => table.reload());
  type.addEventListener('change', () => table.reload());
  return {
    title: 'Audit',
    element: shell(
      'audit',
      'Who did what, newest first. Events reach this list within a few seconds.',
      h('div', { class: 'toolbar-row' }, type, actor, target, apply),
      table.element,
    ),
    destroy: () => table.destroy(),
  };
}

/** "Invite": a single-use sign-up link, optionally for one email, shown once to copy. */
function inviteButton(ctx: AppContext): HTMLButtonElement {
  const button = h(
    'button',
    { type: 'button', class: 'btn btn-secondary btn-sm', 'data-testid': 'admin-invite' },
    icon('plus', 16),
    'Invite',
  );
  button.addEventListener('click', () => {
    const email = h('input', {
      type: 'email',
      class: 'input',
      name: 'invite-email',
      placeholder: 'Only for this email (optional)',
      'aria-label': 'Email the invite is for (optional)',
    });
    const result = h('p', { class: 'mono', 'data-testid': 'admin-invite-url' });
    const note = h(
      'p',
      { class: 'muted' },
      'The link works once and expires in 3 days. It is shown only now: copy it and send it.',
    );
    const dialog = openDialog({
      title: 'Invite someone',
      body: h('div', null, email, result, note),
    });
    const create = h('button', { type: 'button', class: 'btn btn-primary' }, 'Create link');
    create.addEventListener('click', () => {
      create.disabled = true;
      ctx.api.createInvite(email.value.trim() || undefined).then(
        (invite) => {
          result.textContent = new URL(invite.url, location.origin).href;
          create.hidden = true;
        },
        (e: unknown) => {
          create.disabled = false;
          toast(describeError(e), 'error');
        },
      );
    });
    dialog.footer.append(create);
    email.focus();
  });
  return button;
}
