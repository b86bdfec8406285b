// Two-factor sign-in (TOTP) in the web client: the code step after a right password, the set-up (QR
// code, the secret for typing in by hand, one confirming code), the recovery codes shown once, and
// the Security page where a signed-in person turns it on or off.
import { describeError } from '../api/api-error.js';
import type { Enrolment } from '../api/api-client.js';
import type { AppContext, View } from '../app-context.js';
import { h, uid } from '../lib/dom.js';

/** A one-field form for a 6-digit code (or a recovery code, when `allowRecovery`). */
export function codeForm(opts: {
  label: string;
  submitText: string;
  allowRecovery: boolean;
  onCode: (code: string) => Promise<void>;
}): HTMLFormElement {
  const id = uid('code');
  const errorId = uid('code-error');
  const input = h('input', {
    id,
    name: 'code',
    type: 'text',
    inputmode: opts.allowRecovery ? 'text' : 'numeric',
    autocomplete: 'one-time-code',
    required: true,
    maxlength: 32,
    spellcheck: 'false',
    'aria-describedby': errorId,
    'data-testid': 'mfa-code',
  });
  const error = h('p', { id: errorId, class: 'form-error', role: 'alert', 'data-testid': 'mfa-error' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, opts.submitText);
  const form = h(
    'form',
    { class: 'form', novalidate: true },
    h(
      'div',
      { class: 'field' },
      h('label', { for: id }, opts.label),
      input,
      opts.allowRecovery
        ? h('p', { class: 'field-hint' }, 'Lost your phone? Enter one of your recovery codes instead.')
        : null,
    ),
    error,
    submit,
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const code = input.value.trim();
    error.textContent = '';
    if (code === '') {
      error.textContent = 'Enter the code.';
      input.focus();
      return;
    }
    submit.disabled = true;
    opts.onCode(code).then(
      () => {
        submit.disabled = false;
      },
      (e: unknown) => {
        submit.disabled = false;
        error.textContent = describeError(e);
        input.select();
        input.focus();
      },
    );
  });
  queueMicrotask(() => input.focus());
  return form;
}

/** The QR code (as an image: the SVG never becomes markup in the page), the secret and a code field. */
export function enrolmentPanel(enrolment: Enrolment, onCode: (code: string) => Promise<void>): HTMLElement {
  const qr = h('img', {
    class: 'mfa-qr',
    alt: 'QR code for your authenticator app',
    width: 200,
    height: 200,
    src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(enrolment.qrSvg)}`,
    'data-testid': 'mfa-qr',
  });
  return h(
    'div',
    { class: 'mfa-enrol' },
    h(
      'p',
      null,
      'Scan this QR code with an authenticator app (Google Authenticator, 1Password, Authy, …), then enter the 6-digit code it shows.',
    ),
    qr,
    h(
      'p',
      { class: 'muted' },
      'Cannot scan? Enter this key by hand: ',
      h('code', { 'data-testid': 'mfa-secret' }, enrolment.secret),
    ),
    codeForm({ label: 'Code from the app', submitText: 'Turn on', allowRecovery: false, onCode }),
  );
}

/** The recovery codes, shown this once. */
export function recoveryCodesPanel(codes: string[], onDone: () => void): HTMLElement {
  const done = h('button', { type: 'button', class: 'btn btn-primary' }, 'I have saved them');
  done.addEventListener('click', onDone);
  return h(
    'div',
    { class: 'mfa-recovery', 'data-testid': 'mfa-recovery-codes' },
    h('h2', null, 'Your recovery codes'),
    h(
      'p',
      null,
      'Each one signs you in once if you lose your phone. Keep them somewhere safe: they are not shown again.',
    ),
    h('ul', { class: 'mfa-codes' }, ...codes.map((c) => h('li', null, h('code', null, c)))),
    done,
  );
}

/** /security: two-factor sign-in on or off. */
export function securityView(ctx: AppContext): View {
  const body = h('div', { class: 'card security-card', 'aria-busy': 'true' });
  const element = h(
    'section',
    { class: 'page' },
    h(
      'div',
      { class: 'page-header' },
      h(
        'div',
        null,
        h('h1', { class: 'page-title' }, 'Security'),
        h('p', { class: 'muted' }, 'Two-factor sign-in asks for a code from your phone after your password.'),
      ),
    ),
    body,
  );

  const show = (...nodes: (Node | string)[]) => {
    body.setAttribute('aria-busy', 'false');
    body.replaceChildren(...nodes);
  };
  const fail = (e: unknown) => show(h('p', { role: 'alert' }, describeError(e)));

  const render = async () => {
    const status = await ctx.api.twoFactorStatus();
    if (!status.enabled) {
      const start = h(
        'button',
        { type: 'button', class: 'btn btn-primary', 'data-testid': 'mfa-setup' },
        'Set up two-factor sign-in',
      );
      start.addEventListener('click', () => {
        ctx.api.setupTwoFactor().then(
          (enrolment) =>
            show(
              enrolmentPanel(enrolment, async (code) => {
                const { recoveryCodes } = await ctx.api.confirmTwoFactor(code);
                show(recoveryCodesPanel(recoveryCodes, () => void render().catch(fail)));
              }),
            ),
          fail,
        );
      });
      show(h('p', { 'data-testid': 'mfa-status' }, 'Two-factor sign-in is off.'), start);
      return;
    }
    show(
      h(
        'p',
        { 'data-testid': 'mfa-status' },
        `Two-factor sign-in is on. Recovery codes left: ${status.recoveryCodesLeft}.`,
      ),
      h('h2', null, 'Turn it off'),
      codeForm({
        label: 'A code from your app, or a recovery code',
        submitText: 'Turn off two-factor sign-in',
        allowRecovery: true,
        onCode: async (code) => {
          await ctx.api.disableTwoFactor(code);
          await render();
        },
      }),
    );
  };
  render().catch(fail);
  return { element, title: 'Security' };
}
