// Sign in and create an account. Errors say what happened and what to do (wrong password, too many
// attempts and when to retry, server down); the error line has its space reserved so the form does
// not jump when one appears.
import { describeError, isApiError } from '../api/api-error.js';
import type { AppContext, View } from '../app-context.js';
import { brandMark } from '../ui/brand.js';
import { h, uid } from '../lib/dom.js';
import { codeForm, enrolmentPanel, recoveryCodesPanel } from './two-factor.js';

type Mode = 'sign-in' | 'sign-up';

const MIN_PASSWORD = 8;
const PASSWORD_RULE = 'At least 8 characters.';

export function authView(ctx: AppContext, mode: Mode): View {
  const query = new URLSearchParams(location.search);
  const next = safeNext(query.get('next'));
  const signInError = query.get('signInError');
  const flash =
    ctx.takeFlash() ??
    (signInError === null ? null : { message: companySignInError(signInError), tone: 'error' as const });
  // An admin's invite link (REGISTRATION=closed): /sign-up?invite=…
  const invite = query.get('invite');
  const isSignUp = mode === 'sign-up';

  const emailId = uid('email');
  const passwordId = uid('password');
  const hintId = uid('password-hint');
  const errorId = uid('auth-error');

  const email = h('input', {
    id: emailId,
    name: 'email',
    type: 'email',
    autocomplete: 'username',
    required: true,
    maxlength: 254,
    spellcheck: 'false',
    'aria-describedby': errorId,
  });
  const password = h('input', {
    id: passwordId,
    name: 'password',
    type: 'password',
    autocomplete: isSignUp ? 'new-password' : 'current-password',
    required: true,
    minlength: isSignUp ? MIN_PASSWORD : 1,
    maxlength: 256,
    'aria-describedby': isSignUp ? `${hintId} ${errorId}` : errorId,
  });
  const reveal = h(
    'button',
    { type: 'button', class: 'input-addon', 'aria-pressed': 'false', 'aria-controls': passwordId },
    'Show',
  );
  reveal.addEventListener('click', () => {
    const shown = password.type === 'text';
    password.type = shown ? 'password' : 'text';
    reveal.textContent = shown ? 'Show' : 'Hide';
    reveal.setAttribute('aria-pressed', String(!shown));
  });

  const error = h('p', { id: errorId, class: 'form-error', role: 'alert', 'data-testid': 'auth-error' });
  // One line says how long the password must be; a too-short one turns that line red instead of
  // adding a second sentence that says the same (issue 14 point 12).
  const hint = h('p', { id: hintId, class: 'field-hint', 'data-testid': 'password-hint' }, PASSWORD_RULE);
  const markShort = (short: boolean) => {
    hint.classList.toggle('field-error', short);
    if (short) password.setAttribute('aria-invalid', 'true');
    else password.removeAttribute('aria-invalid');
  };
  password.addEventListener('input', () => {
    if (password.value.length >= MIN_PASSWORD) markShort(false);
  });
  const submit = h(
    'button',
    { type: 'submit', class: 'btn btn-primary btn-block' },
    isSignUp ? 'Create account' : 'Sign in',
  );

  const form = h(
    'form',
    { class: 'form', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: emailId }, 'Email'), email),
    h(
      'div',
      { class: 'field' },
      h('label', { for: passwordId }, 'Password'),
      h('div', { class: 'input-group' }, password, reveal),
      isSignUp ? hint : null,
    ),
    error,
    submit,
  );

  const setBusy = (busy: boolean) => {
    submit.disabled = busy;
    submit.classList.toggle('is-busy', busy);
    submit.setAttribute('aria-busy', String(busy));
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    error.textContent = '';
    const problem = validate(email.value.trim(), password.value, isSignUp);
    markShort(problem?.message === PASSWORD_RULE);
    if (problem) {
      if (problem.message !== PASSWORD_RULE) error.textContent = problem.message;
      (problem.field === 'email' ? email : password).focus();
      return;
    }
    setBusy(true);
    const call = isSignUp
      ? ctx.api.register(email.value.trim(), password.value, invite ?? undefined)
      : ctx.api.login(email.value.trim(), password.value);
    call.then(
      (user) => {
        ctx.signedIn(user);
        ctx.go(next ?? '/instances', { replace: true });
      },
      (e: unknown) => {
        setBusy(false);
        const challenge = isApiError(e) ? e.details?.challenge : undefined;
        if (isApiError(e) && typeof challenge === 'string') {
          if (e.code === 'MFA_REQUIRED') return secondStep(challenge, false);
          if (e.code === 'MFA_ENROLMENT_REQUIRED') return secondStep(challenge, true);
        }
        error.textContent = describeError(e);
        if (isApiError(e) && e.code === 'INVALID_CREDENTIALS') {
          password.select();
          password.focus();
        }
      },
    );
  });

  /** After a right password: the code (or, with AUTH_REQUIRE_2FA, the set-up first), then in. */
  const secondStep = (challenge: string, enrol: boolean) => {
    const finish = async (code: string) => {
      const { user, recoveryCodes } = await ctx.api.verifySecondFactor(challenge, code);
      const enter = () => {
        ctx.signedIn(user);
        ctx.go(next ?? '/instances', { replace: true });
      };
      if (recoveryCodes) form.replaceWith(recoveryCodesPanel(recoveryCodes, enter));
      else enter();
    };
    if (!enrol) {
      const step = codeForm({
        label: 'Code from your authenticator app',
        submitText: 'Verify',
        allowRecovery: true,
        onCode: finish,
      });
      form.replaceWith(step);
      return;
    }
    ctx.api.enrolWithChallenge(challenge).then(
      (enrolment) => {
        form.replaceWith(
          h(
            'div',
            null,
            h('p', { role: 'status' }, 'This site requires two-factor sign-in. Set it up to continue.'),
            enrolmentPanel(enrolment, finish),
          ),
        );
      },
      (e: unknown) => {
        error.textContent = describeError(e);
      },
    );
  };

  const switchLink = isSignUp
    ? h('p', { class: 'auth-switch' }, 'Already have an account? ', link('/sign-in', next, 'Sign in'))
    : h('p', { class: 'auth-switch' }, 'New to CloudDesk? ', link('/sign-up', next, 'Create an account'));

  const element = h(
    'section',
    { class: 'auth-page' },
    h(
      'div',
      { class: 'auth-card card' },
      h('div', { class: 'auth-brand' }, brandMark(), h('span', null, 'CloudDesk')),
      h('h1', { class: 'auth-title' }, isSignUp ? 'Create your account' : 'Sign in'),
      h(
        'p',
        { class: 'muted auth-lead' },
        isSignUp
          ? 'Reach your machines’ desktops from any browser.'
          : 'Welcome back. Your desktops are waiting.',
      ),
      flash
        ? h(
            'div',
            {
              class: `notice notice-${flash.tone}`,
              role: flash.tone === 'error' ? 'alert' : 'status',
              'data-testid': 'flash',
            },
            flash.message,
          )
        : null,
      form,
      switchLink,
    ),
  );
  // "Sign in with <company>" when company sign-in is set up; the password form only while AUTH_LOCAL is on.
  const company = h('div', { class: 'auth-company', hidden: true });
  form.before(company);
  ctx.api.methods().then(
    (methods) => {
      if (methods.oidc) {
        company.hidden = false;
        company.replaceChildren(
          ...[
            h(
              'a',
              {
                class: 'btn btn-primary btn-block',
                href: '/api/auth/oidc/start',
                'data-testid': 'oidc-sign-in',
              },
              `Sign in with ${methods.oidc.name}`,
            ),
            methods.local ? h('p', { class: 'muted auth-or' }, 'or with your email and password') : null,
          ].filter((n) => n !== null),
        );
      }
      if (!methods.local) {
        form.hidden = true;
        switchLink.hidden = true;
      }
    },
    () => undefined, // an older gateway without /api/auth/methods: passwords only, as before
  );
  queueMicrotask(() => email.focus());
  return { element, title: isSignUp ? 'Create account' : 'Sign in' };
}

/** The sentence for a code the company sign-in's callback sent back (`?signInError=CODE`). */
function companySignInError(code: string): string {
  switch (code) {
    case 'OIDC_DOMAIN_FORBIDDEN':
      return 'Accounts of your email domain may not sign in here. Ask your administrator.';
    case 'OIDC_EMAIL_UNVERIFIED':
      return 'Your company account’s email address is not verified, so it cannot be linked to an account here.';
    case 'OIDC_EMAIL_MISSING':
      return 'Your company account gave no email address. Ask your administrator.';
    case 'OIDC_STATE_INVALID':
      return 'That sign-in link was used or has expired. Sign in again.';
    case 'OIDC_DENIED':
      return 'Your company’s sign-in did not let you in.';
    case 'OIDC_TOKEN_INVALID':
      return 'Your company’s sign-in answered in a way that could not be verified. Sign in again.';
    case 'OIDC_PROVIDER_UNAVAILABLE':
      return 'Your company’s sign-in cannot be reached right now. Try again in a moment.';
    case 'ACCOUNT_DISABLED':
      return 'This account is disabled.';
    case 'RATE_LIMITED':
      return 'Too many attempts. Try again in a little while.';
    default:
      return 'Signing in with your company account did not work. Try again.';
  }
}

function validate(
  email: string,
  password: string,
  isSignUp: boolean,
): { field: 'email' | 'password'; message: string } | null {
  if (email === '') return { field: 'email', message: 'Enter your email address.' };
  if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email))
    return { field: 'email', message: 'Enter a valid email address.' };
  if (password === '') return { field: 'password', message: 'Enter your password.' };
  if (isSignUp && password.length < MIN_PASSWORD) return { field: 'password', message: PASSWORD_RULE };
  return null;
}

/** Only same-site paths: `?next=https://evil.example` must not become an open redirect. */
function safeNext(next: string | null): string | null {
  if (next === null || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\')) return null;
  if (next.startsWith('/sign-')) return null;
  return next;
}

function link(path: string, next: string | null, text: string): HTMLAnchorElement {
  const href = next ? `${path}?next=${encodeURIComponent(next)}` : path;
  return h('a', { href, 'data-link': true }, text);
}
