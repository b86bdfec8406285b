// Connecting to an instance, in three visible steps: "Connecting over SSH" (the connection check,
// including the host key), "Starting the desktop" (after the person picks one of the desktop
// environments the instance actually has) and "Waiting for the display", which the viewer finishes.
// An instance that is known (its host key pinned and its desktops found by the last test) connects in
// one click: no check first, only when the connect fails for a reason a check explains (issue 14
// point 10). A busy gateway (503 OVERLOADED/BUSY) is asked again after its Retry-After.
import { describeError, isApiError, type ApiError } from '../api/api-error.js';
import type { ConnectionTestResult, Instance } from '../api/types.js';
import type { AppContext } from '../app-context.js';
import { desktopLabel } from '../lib/format.js';
import { h, icon, uid } from '../lib/dom.js';
import { busyMessage, busyRetryDelayMs, isBusy } from '../lib/retry-after.js';
import { openDialog } from '../ui/dialog.js';
import { connectionCheck } from './connection-check.js';
import { forgetInstance, preferredDesktop } from './instance-knowledge.js';
import { progressSteps } from './progress-steps.js';

/** Errors of a connect that the connection check explains better (and that may mean the knowledge is stale). */
const RECHECK = new Set([
  'HOST_KEY_MISMATCH',
  'SSH_AUTH_FAILED',
  'SSH_UNREACHABLE',
  'SSH_TIMEOUT',
  'SSH_PROTOCOL_ERROR',
  'VNC_SERVER_MISSING',
  'DESKTOP_ENVIRONMENT_MISSING',
  'INSTANCE_ADDRESS_FORBIDDEN',
  'INSTANCE_HOST_UNRESOLVABLE',
]);

/**
 * Opens the connect dialog. With `desktop` (a known instance) it starts that desktop at once; without,
 * it runs the connection check first and lets the person pick.
 */
export function openConnectDialog(
  ctx: AppContext,
  instance: Instance,
  onInstanceChanged: (i: Instance) => void,
  desktop?: string,
): void {
  const abort = new AbortController();
  const steps = progressSteps(['Connecting over SSH', 'Starting the desktop', 'Waiting for the display']);
  const check = connectionCheck(ctx, instance, { onInstanceChanged, signal: abort.signal });
  const stage = h('div', { class: 'connect-stage' });
  const error = h('div', { class: 'connect-error', role: 'alert' });
  let busyTimer: number | undefined;
  const dialog = openDialog({
    title: `Connect to ${instance.name}`,
    description: `${instance.username}@${instance.host}:${instance.port}`,
    body: h('div', { class: 'connect' }, steps.element, check.element, stage, error),
    wide: true,
  });
  void dialog.closed.then(() => {
    abort.abort();
    window.clearTimeout(busyTimer);
  });
  const cancel = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');
  cancel.addEventListener('click', () => dialog.close());
  const retry = h(
    'button',
    { type: 'button', class: 'btn btn-secondary', hidden: true },
    icon('refresh', 16),
    'Try again',
  );
  const connect = h(
    'button',
    { type: 'submit', class: 'btn btn-primary', disabled: true, 'data-testid': 'start-desktop' },
    icon('play', 16),
    'Connect',
  );
  dialog.footer.append(cancel, retry, connect);

  let picked: string | null = null;

  const fail = (message: string) => {
    error.replaceChildren(h('div', { class: 'notice notice-error' }, message));
    retry.hidden = false;
    retry.focus();
  };

  const pick = (result: ConnectionTestResult) => {
    const available = result.desktopEnvironments;
    picked = preferredDesktop(ctx, instance.id, available);
    const name = uid('desktop');
    const options = available.map((de) => {
      const id = uid('de');
      const input = h('input', { type: 'radio', name, value: de, id });
      input.checked = de === picked;
      input.addEventListener('change', () => {
        picked = de;
      });
      return h(
        'div',
        { class: 'choice' },
        input,
        h(
          'label',
          { for: id, 'data-testid': `de-${de}` },
          h('span', { class: 'choice-title' }, desktopLabel(de)),
          h('span', { class: 'choice-sub' }, deBlurb(de)),
        ),
      );
    });
    const form = h(
      'form',
      { class: 'de-picker' },
      h('fieldset', { class: 'choices' }, h('legend', null, 'Desktop environment'), ...options),
    );
    form.id = uid('de-form');
    connect.setAttribute('form', form.id);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      start();
    });
    stage.replaceChildren(form);
    connect.disabled = picked === null;
    const checkedInput = form.querySelector<HTMLInputElement>('input:checked');
    (checkedInput ?? connect).focus();
  };

  /** The gateway is busy: say so with a countdown and ask again after its Retry-After. */
  const retryWhenFree = (e: ApiError, desktop: string) => {
    const until = Date.now() + busyRetryDelayMs(e);
    const tick = () => {
      if (abort.signal.aborted) return;
      const left = until - Date.now();
      if (left <= 0) {
        start(desktop);
        return;
      }
      steps.set(1, 'active', busyMessage(left));
      busyTimer = window.setTimeout(tick, Math.min(1_000, left));
    };
    tick();
  };

  const start = (chosen: string | null = picked) => {
    if (chosen === null) return;
    const desktop = chosen;
    ctx.prefs.lastDesktop[instance.id] = desktop;
    ctx.savePrefs();
    connect.disabled = true;
    connect.classList.add('is-busy');
    stage.querySelectorAll('input').forEach((i) => (i.disabled = true));
    error.replaceChildren();
    retry.hidden = true;
    steps.set(1, 'active', `Starting ${desktopLabel(desktop)} — this can take a few seconds`);
    ctx.api.connect(instance.id, desktop).then(
      (result) => {
        if (abort.signal.aborted) return;
        steps.set(1, 'done');
        steps.set(2, 'active');
        ctx.pendingConnects.set(result.sessionId, {
          websocketUrl: result.websocketUrl,
          instanceName: instance.name,
          desktopEnvironment: desktop,
          display: result.display,
        });
        dialog.close();
        ctx.go(`/desktop/${encodeURIComponent(result.sessionId)}`);
      },
      (e: unknown) => {
        if (abort.signal.aborted) return;
        if (isBusy(e)) {
          retryWhenFree(e, desktop);
          return;
        }
        connect.classList.remove('is-busy');
        connect.disabled = false;
        stage.querySelectorAll('input').forEach((i) => (i.disabled = false));
        if (isApiError(e) && RECHECK.has(e.code) && stage.querySelector('form') === null) {
          // One-click connect of a known instance failed in a way the check explains (a changed host
          // key, a removed desktop): forget what we knew and run it now.
          forgetInstance(ctx, instance.id);
          runCheck();
          return;
        }
        steps.set(1, 'failed');
        fail(connectProblem(e));
      },
    );
  };

  let checked = false;
  const runCheck = () => {
    checked = true;
    retry.hidden = true;
    error.replaceChildren();
    stage.replaceChildren();
    connect.disabled = true;
    steps.set(0, 'active');
    steps.set(1, 'pending');
    steps.set(2, 'pending');
    check.run().then(
      (result) => {
        if (abort.signal.aborted) return;
        if (result === null) {
          steps.set(0, 'failed');
          fail('Fix the problem above, then try again.');
          return;
        }
        steps.set(0, 'done');
        pick(result);
      },
      (e: unknown) => {
        steps.set(0, 'failed');
        fail(describeError(e));
      },
    );
  };
  retry.addEventListener('click', () => {
    // A failed start keeps the check's result (or the known instance): only the start is retried.
    if (stage.querySelector('form')) start();
    else if (desktop !== undefined && !checked) start(desktop);
    else runCheck();
  });
  if (desktop !== undefined) {
    steps.set(0, 'done', 'Known instance: host key pinned');
    start(desktop);
  } else runCheck();
}

function deBlurb(de: string): string {
  switch (de) {
    case 'openbox':
      return 'Minimal window manager, starts fast';
    case 'xfce':
      return 'Full desktop with panel and file manager';
    default:
      return 'Desktop environment';
  }
}

function connectProblem(e: unknown): string {
  if (!isApiError(e)) return describeError(e);
  switch (e.code) {
    case 'SESSION_LIMIT_REACHED':
      return 'You already have the maximum number of desktops running. End one on the Sessions page, then connect again.';
    case 'NO_FREE_DISPLAY':
      return 'Every VNC display on this instance is in use. End a desktop there, then try again.';
    case 'DESKTOP_START_FAILED':
      return 'The desktop did not start on the instance. Try again; if it keeps failing, check the instance’s ~/.vnc logs.';
    default:
      return describeError(e);
  }
}
