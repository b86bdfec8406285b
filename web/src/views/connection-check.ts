// "Test connection": logs in over SSH through the gateway and shows, line by line, what was found —
// reachable, the host key (confirm it the first time; a loud warning and a deliberate re-trust when it
// changed), the VNC server, the desktop environments. Used on its own and as the first step of
// connecting.
import { ApiError, describeError, isApiError } from '../api/api-error.js';
import type { ConnectionTestResult, Instance } from '../api/types.js';
import type { AppContext } from '../app-context.js';
import { desktopLabel } from '../lib/format.js';
import { h, icon, uid } from '../lib/dom.js';
import { forgetInstance, rememberInstance } from './instance-knowledge.js';

type RowState = 'idle' | 'running' | 'ok' | 'warn' | 'error';

interface Row {
  element: HTMLElement;
  set(state: RowState, text: string, extra?: Node | null): void;
}

function row(title: string): Row {
  const status = h('span', { class: 'check-icon', 'aria-hidden': 'true' });
  const text = h('span', { class: 'check-text' });
  const extraSlot = h('div', { class: 'check-extra' });
  const stateLabel = h('span', { class: 'visually-hidden' });
  const element = h(
    'li',
    { class: 'check check-idle' },
    status,
    h(
      'div',
      { class: 'check-body' },
      h('span', { class: 'check-title' }, title, stateLabel),
      text,
      extraSlot,
    ),
  );
  const set = (state: RowState, message: string, extra: Node | null = null) => {
    element.className = `check check-${state}`;
    status.replaceChildren(
      state === 'ok'
        ? icon('check', 14)
        : state === 'error'
          ? icon('close', 14)
          : state === 'warn'
            ? icon('alert', 14)
            : state === 'running'
              ? h('span', { class: 'spinner spinner-sm' })
              : '',
    );
    stateLabel.textContent = {
      idle: '',
      running: ' (checking)',
      ok: ' (ok)',
      warn: ' (needs attention)',
      error: ' (failed)',
    }[state];
    text.textContent = message;
    extraSlot.replaceChildren(...(extra ? [extra] : []));
  };
  set('idle', 'Not checked yet');
  return { element, set };
}

export interface CheckOptions {
  /** Called after the host key was trusted (the instance changed). */
  onInstanceChanged?: (instance: Instance) => void;
  signal?: AbortSignal;
}

export interface CheckView {
  element: HTMLElement;
  /**
   * Runs the test. Resolves with the result once the instance is usable (its host key pinned or
   * confirmed), or null when it cannot be used as it is. A key waiting for confirmation keeps the
   * promise pending until the person trusts it.
   */
  run(): Promise<ConnectionTestResult | null>;
}

export function connectionCheck(ctx: AppContext, initial: Instance, options: CheckOptions = {}): CheckView {
  let instance = initial;
  const ssh = row('SSH login');
  const hostKey = row('Host key');
  const vnc = row('VNC server');
  const desktops = row('Desktop environments');
  const live = h('p', { class: 'visually-hidden', 'aria-live': 'polite' });
  const element = h(
    'div',
    { class: 'connection-check', 'data-testid': 'connection-check' },
    h('ol', { class: 'checklist' }, ssh.element, hostKey.element, vnc.element, desktops.element),
    live,
  );

  /** Runs the test and keeps what it found (or forgets what was known when it failed). */
  const run = async (): Promise<ConnectionTestResult | null> => {
    const result = await test();
    if (result) rememberInstance(ctx, instance.id, result);
    else forgetInstance(ctx, instance.id);
    return result;
  };

  const test = async (): Promise<ConnectionTestResult | null> => {
    ssh.set('running', `Logging in as ${instance.username}@${instance.host}:${instance.port}…`);
    hostKey.set('idle', 'Waiting for the login');
    vnc.set('idle', 'Waiting for the login');
    desktops.set('idle', 'Waiting for the login');
    live.textContent = 'Testing the connection…';
    let result: ConnectionTestResult;
    try {
      result = await ctx.api.testInstance(instance.id);
    } catch (e) {
      if (options.signal?.aborted) return null;
      if (isApiError(e) && e.code === 'HOST_KEY_MISMATCH') {
        ssh.set('ok', `Reached ${instance.host}:${instance.port}`);
        const actual = typeof e.details?.actual === 'string' ? e.details.actual : null;
        const expected =
          typeof e.details?.expected === 'string'
            ? e.details.expected
            : (instance.hostKeyFingerprint ?? 'unknown');
        vnc.set('idle', 'Not checked: the host key must be sorted out first');
        desktops.set('idle', 'Not checked');
        live.textContent = 'Warning: the host key of this instance changed.';
        return mismatch(expected, actual);
      }
      ssh.set('error', sshProblem(e, instance));
      hostKey.set('idle', 'Not checked');
      vnc.set('idle', 'Not checked');
      desktops.set('idle', 'Not checked');
      live.textContent = 'The connection test failed.';
      return null;
    }
    if (options.signal?.aborted) return null;
    ssh.set('ok', `Logged in as ${instance.username}@${instance.host}:${instance.port}`);
    const usable = reportDesktop(result);
    if (result.hostKeyStatus === 'mismatch') {
      return mismatch(instance.hostKeyFingerprint ?? 'unknown', result.hostKeyFingerprint);
    }
    if (result.hostKeyStatus === 'new') {
      live.textContent = 'Confirm the host key of this instance.';
      return confirmNew(result, usable);
    }
    hostKey.set('ok', 'Matches the pinned key', fingerprintLine(result.hostKeyFingerprint));
    live.textContent = usable
      ? 'Connection test passed.'
      : 'The instance is reachable but cannot show a desktop yet.';
    return usable ? result : null;
  };

  const reportDesktop = (result: ConnectionTestResult): boolean => {
    const server = result.vncServer;
    if (server) {
      const name = server.kind === 'tigervnc' ? 'TigerVNC' : server.kind;
      const version = server.version ? ` ${server.version}` : '';
      const transport = server.unixSocket
        ? 'private Unix socket (only your user can reach the desktop)'
        : 'localhost TCP with a one-time password';
      vnc.set('ok', `${name}${version}, ${transport}`);
    } else {
      vnc.set(
        'error',
        'No VNC server found. Install it on the instance: sudo apt install tigervnc-standalone-server',
      );
    }
    if (result.desktopEnvironments.length > 0) {
      desktops.set(
        'ok',
        result.desktopEnvironments.map(desktopLabel).join(', '),
        h(
          'div',
          { class: 'chips' },
          ...result.desktopEnvironments.map((d) => h('span', { class: 'chip' }, desktopLabel(d))),
        ),
      );
    } else {
      desktops.set(
        'error',
        'None found. Install one on the instance, e.g. sudo apt install xfce4 dbus-x11 (or openbox xterm)',
      );
    }
    return server !== null && result.desktopEnvironments.length > 0;
  };

  const confirmNew = (result: ConnectionTestResult, usable: boolean): Promise<ConnectionTestResult | null> =>
    new Promise((resolve) => {
      const trust = h(
        'button',
        { type: 'button', class: 'btn btn-primary btn-sm', 'data-testid': 'trust-host-key' },
        icon('shield', 16),
        'Trust this host key',
      );
      const error = h('p', { class: 'form-error', role: 'alert' });
      const panel = h(
        'div',
        { class: 'trust-panel' },
        h(
          'p',
          null,
          'First connection to this instance. Check that this is its SSH host key before trusting it:',
        ),
        fingerprintLine(result.hostKeyFingerprint),
        h(
          'p',
          { class: 'field-hint' },
          'On the instance, ',
          h('code', null, 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub'),
          ' prints it.',
        ),
        h('div', { class: 'trust-actions' }, trust),
        error,
      );
      hostKey.set('warn', 'Not confirmed yet', panel);
      trust.addEventListener('click', () => {
        trust.disabled = true;
        trust.classList.add('is-busy');
        error.textContent = '';
        ctx.api.updateInstance(instance.id, { hostKeyFingerprint: result.hostKeyFingerprint }).then(
          (updated) => {
            instance = updated;
            options.onInstanceChanged?.(updated);
            hostKey.set('ok', 'Trusted and pinned', fingerprintLine(result.hostKeyFingerprint));
            live.textContent = 'Host key trusted.';
            resolve(usable ? { ...result, hostKeyStatus: 'pinned' } : null);
          },
          (e: unknown) => {
            trust.disabled = false;
            trust.classList.remove('is-busy');
            error.textContent = describeError(e);
          },
        );
      });
      trust.focus();
    });

  const mismatch = (expected: string, actual: string | null): Promise<ConnectionTestResult | null> =>
    new Promise((resolve) => {
      const confirmId = uid('mismatch-confirm');
      const understood = h('input', {
        type: 'checkbox',
        id: confirmId,
        'data-testid': 'mismatch-understood',
      });
      const retrust = h(
        'button',
        { type: 'button', class: 'btn btn-danger btn-sm', disabled: true, 'data-testid': 'retrust-host-key' },
        'Trust the new key',
      );
      understood.addEventListener('change', () => {
        retrust.disabled = !understood.checked || actual === null;
      });
      const error = h('p', { class: 'form-error', role: 'alert' });
      const panel = h(
        'div',
        { class: 'danger-panel', role: 'alert' },
        h('p', { class: 'danger-title' }, icon('alert', 18), 'The host key of this instance has changed'),
        h(
          'p',
          null,
          'Someone may be intercepting the connection — or the instance was rebuilt and got a new key. CloudDesk refuses to connect until you decide.',
        ),
        h(
          'dl',
          { class: 'fingerprints' },
          h('dt', null, 'Pinned'),
          h('dd', null, h('code', null, expected)),
          h('dt', null, 'Presented now'),
          h('dd', null, h('code', { 'data-testid': 'presented-fingerprint' }, actual ?? 'unknown')),
        ),
        h(
          'div',
          { class: 'checkbox-row' },
          understood,
          h('label', { for: confirmId }, 'I checked the new fingerprint on the instance and it is correct'),
        ),
        h('div', { class: 'trust-actions' }, retrust),
        error,
      );
      hostKey.set('error', 'Changed since it was pinned', panel);
      retrust.addEventListener('click', () => {
        if (actual === null) return;
        retrust.disabled = true;
        retrust.classList.add('is-busy');
        ctx.api.updateInstance(instance.id, { hostKeyFingerprint: actual }).then(
          (updated) => {
            instance = updated;
            options.onInstanceChanged?.(updated);
            // Check again with the new key pinned: the rest of the lines were not checked yet.
            test().then(resolve, () => resolve(null));
          },
          (e: unknown) => {
            retrust.disabled = false;
            retrust.classList.remove('is-busy');
            error.textContent = describeError(e);
          },
        );
      });
    });

  return { element, run };
}

function fingerprintLine(fingerprint: string): HTMLElement {
  return h('code', { class: 'fingerprint', 'data-testid': 'fingerprint' }, fingerprint);
}

function sshProblem(e: unknown, instance: Instance): string {
  if (!(e instanceof ApiError)) return describeError(e);
  switch (e.code) {
    case 'SSH_AUTH_FAILED':
      return `${instance.host} refused the login for ${instance.username}. Check the user and the password or key.`;
    case 'SSH_UNREACHABLE':
      return `Cannot reach ${instance.host}:${instance.port} over SSH. Is the machine running, and is the port open to CloudDesk?`;
    case 'SSH_TIMEOUT':
      return `${instance.host}:${instance.port} did not answer in time.`;
    case 'INSTANCE_ADDRESS_FORBIDDEN':
    case 'INSTANCE_HOST_UNRESOLVABLE':
      return e.message;
    default:
      return describeError(e);
  }
}
