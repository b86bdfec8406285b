// The instances page: every registered machine with its status (desktop running, host key pinned,
// last test result), and the actions — connect or resume, test, edit, delete, add.
import { describeError } from '../api/api-error.js';
import type { ActiveSession, ConnectionTestResult, Instance } from '../api/types.js';
import type { AppContext, View } from '../app-context.js';
import { h, icon } from '../lib/dom.js';
import { desktopLabel, formatAgo, formatDateTime } from '../lib/format.js';
import { confirmDialog, openDialog } from '../ui/dialog.js';
import { toast } from '../ui/toast.js';
import { openConnectDialog } from './connect.dialog.js';
import { connectionCheck } from './connection-check.js';
import { openInstanceForm } from './instance-form.dialog.js';
import { knownDesktops, preferredDesktop } from './instance-knowledge.js';

/** Results of tests run while this page is open, so the list can say "reachable" without re-testing. */
type TestNote = { ok: true; result: ConnectionTestResult; at: number } | { ok: false; at: number };

export function instancesView(ctx: AppContext): View {
  let instances: Instance[] = [];
  let sessions: ActiveSession[] = [];
  const notes = new Map<string, TestNote>();
  let destroyed = false;

  const addButton = h(
    'button',
    { type: 'button', class: 'btn btn-primary', 'data-testid': 'add-instance' },
    icon('plus', 16),
    'Add instance',
  );
  const list = h('div', { class: 'instance-list', 'aria-busy': 'true', 'aria-live': 'polite' });
  const element = h(
    'section',
    { class: 'page' },
    h(
      'div',
      { class: 'page-header' },
      h(
        'div',
        null,
        h('h1', { class: 'page-title' }, 'Instances'),
        h('p', { class: 'muted' }, 'Machines you reach over SSH. Connect to open their desktop here.'),
      ),
      addButton,
    ),
    list,
  );

  const flash = ctx.takeFlash();
  if (flash) toast(flash.message, flash.tone === 'error' ? 'error' : 'info');

  const sessionFor = (instanceId: string) => sessions.find((s) => s.instanceId === instanceId);

  const refresh = async () => {
    try {
      const [i, s] = await Promise.all([ctx.api.listInstances(), ctx.api.activeSessions()]);
      if (destroyed) return;
      instances = i;
      sessions = s;
      render();
    } catch (e) {
      if (destroyed) return;
      list.setAttribute('aria-busy', 'false');
      const retry = h(
        'button',
        { type: 'button', class: 'btn btn-secondary' },
        icon('refresh', 16),
        'Try again',
      );
      retry.addEventListener('click', () => {
        list.replaceChildren(...skeleton());
        void refresh();
      });
      list.replaceChildren(
        h('div', { class: 'empty card', role: 'alert' }, h('p', null, describeError(e)), retry),
      );
    }
  };

  const replace = (updated: Instance) => {
    instances = instances.map((i) => (i.id === updated.id ? updated : i));
    render();
  };

  const render = () => {
    list.setAttribute('aria-busy', 'false');
    if (instances.length === 0) {
      const add = h(
        'button',
        { type: 'button', class: 'btn btn-primary' },
        icon('plus', 16),
        'Add your first instance',
      );
      add.addEventListener('click', () => addInstance());
      list.replaceChildren(
        h(
          'div',
          { class: 'empty card' },
          h('div', { class: 'empty-art', 'aria-hidden': 'true' }, icon('monitor', 40)),
          h('h2', null, 'No instances yet'),
          h(
            'p',
            { class: 'muted' },
            'Add a machine you can reach over SSH with TigerVNC installed, and open its desktop in this browser.',
          ),
          add,
        ),
      );
      return;
    }
    list.replaceChildren(...instances.map(card));
  };

  const card = (instance: Instance): HTMLElement => {
    const session = sessionFor(instance.id);
    const note = notes.get(instance.id);
    const badges = h('div', { class: 'badges' });
    if (session) {
      badges.append(
        h(
          'span',
          { class: 'badge badge-live', title: `Started ${formatDateTime(session.startedAt)}` },
          h('span', { class: 'dot', 'aria-hidden': 'true' }),
          `${desktopLabel(session.desktopEnvironment)} running`,
        ),
      );
    }
    badges.append(
      instance.hostKeyFingerprint
        ? h(
            'span',
            { class: 'badge', title: instance.hostKeyFingerprint },
            icon('shield', 14),
            'Host key pinned',
          )
        : h('span', { class: 'badge badge-warn' }, icon('alert', 14), 'Host key not confirmed'),
    );
    if (note) {
      badges.append(
        note.ok
          ? h(
              'span',
              {
                class: 'badge badge-ok',
                title: `Tested ${formatAgo(new Date(note.at).toISOString(), Date.now())}`,
              },
              icon('check', 14),
              'Reachable',
            )
          : h('span', { class: 'badge badge-error' }, icon('close', 14), 'Last test failed'),
      );
    }

    const primary = session
      ? h(
          'a',
          {
            href: `/desktop/${encodeURIComponent(session.id)}`,
            'data-link': true,
            class: 'btn btn-primary',
            'data-testid': 'resume',
          },
          icon('play', 16),
          'Resume',
        )
      : h(
          'button',
          { type: 'button', class: 'btn btn-primary', 'data-testid': 'connect' },
          icon('play', 16),
          'Connect',
        );
    // A known instance connects in one click with the desktop chosen here; others are tested first.
    const desktops = session ? null : knownDesktops(ctx, instance);
    let choice: HTMLSelectElement | null = null;
    if (desktops && desktops.length > 1) {
      choice = h('select', {
        class: 'select select-sm',
        'data-testid': 'desktop-choice',
        'aria-label': `Desktop environment for ${instance.name}`,
      });
      const preferred = preferredDesktop(ctx, instance.id, desktops);
      for (const de of desktops) {
        const option = h('option', { value: de }, desktopLabel(de));
        option.selected = de === preferred;
        choice.append(option);
      }
    }
    if (!session) {
      primary.addEventListener('click', () => {
        const desktop = choice?.value ?? (desktops ? preferredDesktop(ctx, instance.id, desktops) : null);
        openConnectDialog(ctx, instance, replace, desktop ?? undefined);
      });
    }

    const test = h(
      'button',
      { type: 'button', class: 'btn btn-secondary', 'data-testid': 'test' },
      'Test connection',
    );
    test.addEventListener('click', () => testInstance(instance));
    const edit = h(
      'button',
      {
        type: 'button',
        class: 'btn btn-ghost btn-icon',
        'aria-label': `Edit ${instance.name}`,
        title: 'Edit',
      },
      icon('edit'),
    );
    edit.addEventListener('click', () => {
      void openInstanceForm(ctx, instance).then((saved) => {
        if (saved) {
          toast(`${saved.name} saved.`, 'success');
          replace(saved);
        }
      });
    });
    const remove = h(
      'button',
      {
        type: 'button',
        class: 'btn btn-ghost btn-icon btn-danger-ghost',
        'aria-label': `Delete ${instance.name}`,
        title: 'Delete',
      },
      icon('trash'),
    );
    remove.addEventListener('click', () => deleteInstance(instance));

    return h(
      'article',
      { class: 'instance card', 'data-testid': 'instance', 'data-instance-id': instance.id },
      h(
        'div',
        { class: 'instance-main' },
        h('div', { class: 'instance-icon', 'aria-hidden': 'true' }, icon('monitor', 22)),
        h(
          'div',
          { class: 'instance-text' },
          h('h2', { class: 'instance-name' }, instance.name),
          h(
            'p',
            { class: 'instance-address mono' },
            `${instance.username}@${instance.host}${instance.port === 22 ? '' : `:${instance.port}`}`,
            h(
              'span',
              { class: 'muted' },
              ` · ${instance.auth.type === 'privateKey' ? 'private key' : 'password'}`,
            ),
          ),
          badges,
        ),
      ),
      h('div', { class: 'instance-actions' }, primary, choice, test, edit, remove),
    );
  };

  const addInstance = () => {
    void openInstanceForm(ctx, null).then((created) => {
      if (!created) return;
      instances = [...instances, created];
      render();
      toast(`${created.name} added. Checking the connection…`, 'success');
      // The natural next step: confirm the host key and see what the instance offers.
      testInstance(created);
    });
  };

  const testInstance = (instance: Instance) => {
    const check = connectionCheck(ctx, instance, { onInstanceChanged: replace });
    const dialog = openDialog({
      title: `Connection test: ${instance.name}`,
      description: `${instance.username}@${instance.host}:${instance.port}`,
      body: check.element,
      wide: true,
    });
    const again = h(
      'button',
      { type: 'button', class: 'btn btn-secondary' },
      icon('refresh', 16),
      'Test again',
    );
    const done = h('button', { type: 'button', class: 'btn btn-primary' }, 'Done');
    done.addEventListener('click', () => dialog.close());
    dialog.footer.append(again, done);
    const go = () => {
      again.disabled = true;
      void check.run().then((result) => {
        again.disabled = false;
        notes.set(instance.id, result ? { ok: true, result, at: Date.now() } : { ok: false, at: Date.now() });
      });
    };
    again.addEventListener('click', go);
    go();
    void dialog.closed.then(() => {
      if (!destroyed) render();
    });
  };

  const deleteInstance = (instance: Instance) => {
    const running = sessionFor(instance.id);
    void confirmDialog({
      title: `Delete ${instance.name}?`,
      message: running
        ? 'Its running desktop will be ended and its stored credentials erased. This cannot be undone.'
        : 'Its stored credentials will be erased. This cannot be undone.',
      confirmLabel: 'Delete instance',
      danger: true,
    }).then((yes) => {
      if (!yes) return;
      ctx.api.deleteInstance(instance.id).then(
        () => {
          instances = instances.filter((i) => i.id !== instance.id);
          sessions = sessions.filter((s) => s.instanceId !== instance.id);
          render();
          toast(`${instance.name} deleted.`, 'success');
        },
        (e: unknown) => toast(describeError(e), 'error'),
      );
    });
  };

  addButton.addEventListener('click', addInstance);
  list.replaceChildren(...skeleton());
  void refresh();

  return {
    element,
    title: 'Instances',
    destroy() {
      destroyed = true;
    },
  };
}

function skeleton(): HTMLElement[] {
  return [0, 1].map(() =>
    h(
      'div',
      { class: 'instance card skeleton', 'aria-hidden': 'true' },
      h('div', { class: 'skeleton-line w-40' }),
      h('div', { class: 'skeleton-line w-60' }),
    ),
  );
}
