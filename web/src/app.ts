// The application shell: who is signed in, which page is showing, the header and navigation, and the
// hand-offs between pages (a flash message for the next page, a freshly started session for the
// viewer). Pages live in views/; this module only decides which one to mount.
import { ApiClient, webLocksRefreshLock } from './api/api-client.js';
import { ApiError, describeError } from './api/api-error.js';
import type { AppContext, Flash, View } from './app-context.js';
import { h, icon } from './lib/dom.js';
import { loadPrefs, savePrefs } from './lib/prefs.js';
import { Router, type Route } from './lib/router.js';
import { brandMark } from './ui/brand.js';
import { clearToasts, toast } from './ui/toast.js';
import { authView } from './views/auth.view.js';
import { instancesView } from './views/instances.view.js';
import { sessionsView } from './views/sessions.view.js';
import { desktopView } from './views/desktop.view.js';
import { securityView } from './views/two-factor.js';
import { shareView } from './views/share.view.js';
import { adminAuditView, adminSessionsView, adminUsersView } from './views/admin.view.js';

const ROUTES = {
  signIn: '/sign-in',
  signUp: '/sign-up',
  home: '/',
  instances: '/instances',
  sessions: '/sessions',
  security: '/security',
  desktop: '/desktop/:sessionId',
  share: '/share',
  admin: '/admin',
  adminUsers: '/admin/users',
  adminSessions: '/admin/sessions',
  adminAudit: '/admin/audit',
};

const PUBLIC_ROUTES = new Set(['signIn', 'signUp']);
/** Pages for anyone, signed in or not (a share link's landing page decides for itself). */
const OPEN_ROUTES = new Set(['share']);

export function startApp(root: HTMLElement): void {
  const prefs = loadPrefs();
  const channel = typeof BroadcastChannel === 'undefined' ? null : new BroadcastChannel('clouddesk-auth');
  let flash: Flash | null = null;
  let current: View | null = null;

  const api = new ApiClient({
    fetch: (input, init) => fetch(input, init),
    withRefreshLock: webLocksRefreshLock(),
    onSignedOut: (reason) => {
      // The sign-in is gone (expired, revoked, or a reused token ended it): back to the sign-in page,
      // returning here afterwards.
      ctx.user = null;
      ctx.setFlash({ message: describeError(reason), tone: 'error' });
      const next = location.pathname + location.search;
      ctx.go(
        `/sign-in${next !== '/' && !next.startsWith('/sign-') ? `?next=${encodeURIComponent(next)}` : ''}`,
        {
          replace: true,
        },
      );
    },
  });

  const ctx: AppContext = {
    api,
    user: null,
    prefs,
    go: (path, options) => router.go(path, options),
    savePrefs: () => savePrefs(prefs),
    setFlash: (f) => {
      flash = f;
    },
    takeFlash: () => {
      const f = flash;
      flash = null;
      return f;
    },
    pendingConnects: new Map(),
    signedIn(user) {
      ctx.user = user;
      prefs.wasSignedIn = true;
      savePrefs(prefs);
      channel?.postMessage({ type: 'signed-in' });
    },
    async signOut() {
      prefs.wasSignedIn = false;
      savePrefs(prefs);
      try {
        await api.logout();
      } catch (e) {
        // Signed out here either way; the refresh token expires on its own.
        if (!(e instanceof ApiError)) throw e;
      }
      ctx.user = null;
      channel?.postMessage({ type: 'signed-out' });
      ctx.setFlash({ message: 'You are signed out.', tone: 'info' });
      ctx.go('/sign-in', { replace: true });
    },
  };

  channel?.addEventListener('message', (event: MessageEvent<{ type?: string }>) => {
    if (event.data?.type === 'signed-out' && ctx.user !== null) {
      api.forget();
      ctx.user = null;
      ctx.setFlash({ message: 'You signed out in another tab.', tone: 'info' });
      ctx.go('/sign-in', { replace: true });
    }
  });

  const header = buildHeader(ctx);
  const main = h('main', { id: 'main', class: 'main', tabindex: '-1' });

  const mount = (route: Route | null, path: string) => {
    if (route?.name === 'home') return router.go(ctx.user ? '/instances' : '/sign-in', { replace: true });
    if (route?.name === 'admin') return router.go('/admin/users', { replace: true });
    if (route && !PUBLIC_ROUTES.has(route.name) && !OPEN_ROUTES.has(route.name) && ctx.user === null) {
      const next = encodeURIComponent(path + location.search);
      return router.go(`/sign-in?next=${next}`, { replace: true });
    }
    if (route && PUBLIC_ROUTES.has(route.name) && ctx.user !== null) {
      return router.go('/instances', { replace: true });
    }
    current?.destroy?.();
    // Notices belong to the signed-in pages they came from, not to the sign-in form.
    if (route && PUBLIC_ROUTES.has(route.name)) clearToasts();
    current = createView(ctx, route);
    document.title = `${current.title} · CloudDesk`;
    root.classList.toggle('immersive', current.immersive === true);
    header.update(route?.name ?? '');
    main.replaceChildren(current.element);
    // Move focus to the new page's heading so screen readers announce the navigation.
    const heading = current.element.querySelector<HTMLElement>('h1');
    if (heading && !current.immersive) {
      heading.setAttribute('tabindex', '-1');
      heading.focus({ preventScroll: true });
    }
    window.scrollTo(0, 0);
  };

  const router = new Router(ROUTES, mount);

  root.replaceChildren(splash());
  // Only a browser that was signed in has a refresh cookie to trade: a first visit asks nothing, so
  // the console shows no 401 (issue 14 point 12). The cookie is httpOnly; this flag stands in for it.
  // Company sign-in comes back to /instances?signedIn=oidc with the refresh cookie just set.
  const url = new URL(location.href);
  const fromCompanySignIn = url.searchParams.get('signedIn') === 'oidc';
  if (fromCompanySignIn) {
    url.searchParams.delete('signedIn');
    history.replaceState(history.state, '', url.pathname + url.search + url.hash);
  }
  const restored = prefs.wasSignedIn || fromCompanySignIn ? api.restore() : Promise.resolve(null);
  restored.then(
    (user) => {
      if (user) {
        if (fromCompanySignIn) ctx.signedIn(user);
        else ctx.user = user;
      } else if (prefs.wasSignedIn) {
        prefs.wasSignedIn = false;
        savePrefs(prefs);
        ctx.setFlash({ message: 'Your session has expired. Sign in again.', tone: 'error' });
      }
      root.replaceChildren(header.element, main);
      router.resolve();
    },
    (e: unknown) => {
      root.replaceChildren(unavailable(describeError(e)));
    },
  );
}

function createView(ctx: AppContext, route: Route | null): View {
  switch (route?.name ?? '') {
    case 'signIn':
      return authView(ctx, 'sign-in');
    case 'signUp':
      return authView(ctx, 'sign-up');
    case 'instances':
      return instancesView(ctx);
    case 'sessions':
      return sessionsView(ctx);
    case 'security':
      return securityView(ctx);
    case 'desktop':
      return desktopView(ctx, route?.params.sessionId ?? '');
    case 'share':
      return shareView(ctx);
    case 'adminUsers':
      return adminUsersView(ctx);
    case 'adminSessions':
      return adminSessionsView(ctx);
    case 'adminAudit':
      return adminAuditView(ctx);
    default:
      return notFound();
  }
}

function buildHeader(ctx: AppContext): { element: HTMLElement; update(routeName: string): void } {
  const links = {
    instances: h('a', { href: '/instances', 'data-link': true, class: 'nav-link' }, 'Instances'),
    sessions: h('a', { href: '/sessions', 'data-link': true, class: 'nav-link' }, 'Sessions'),
    security: h(
      'a',
      { href: '/security', 'data-link': true, class: 'nav-link', 'data-testid': 'nav-security' },
      'Security',
    ),
    // Offered to admins only; the gateway refuses everyone else anyway.
    admin: h(
      'a',
      { href: '/admin/users', 'data-link': true, class: 'nav-link', 'data-testid': 'nav-admin' },
      'Admin',
    ),
  };
  const email = h('span', { class: 'header-user-email' });
  const signOut = h(
    'button',
    { type: 'button', class: 'btn btn-ghost btn-sm', 'data-testid': 'sign-out' },
    icon('logout', 16),
    'Sign out',
  );
  signOut.addEventListener('click', () => {
    signOut.disabled = true;
    ctx.signOut().then(
      () => {
        signOut.disabled = false;
      },
      (e: unknown) => {
        signOut.disabled = false;
        toast(describeError(e), 'error');
      },
    );
  });
  const nav = h(
    'nav',
    { class: 'header-nav', 'aria-label': 'Main' },
    links.instances,
    links.sessions,
    links.security,
    links.admin,
  );
  const user = h('div', { class: 'header-user' }, email, signOut);
  const element = h(
    'header',
    { class: 'app-header' },
    h('a', { href: '#main', class: 'skip-link' }, 'Skip to content'),
    h(
      'a',
      { href: '/instances', 'data-link': true, class: 'brand', 'aria-label': 'CloudDesk home' },
      brandMark(),
      'CloudDesk',
    ),
    nav,
    user,
  );
  return {
    element,
    update(routeName) {
      const signedIn = ctx.user !== null;
      nav.hidden = !signedIn;
      user.hidden = !signedIn;
      email.textContent = ctx.user?.email ?? '';
      links.admin.hidden = ctx.user?.role !== 'admin';
      for (const [name, link] of Object.entries(links)) {
        if (name === routeName || (name === 'admin' && routeName.startsWith('admin')))
          link.setAttribute('aria-current', 'page');
        else link.removeAttribute('aria-current');
      }
    },
  };
}

function splash(): HTMLElement {
  return h(
    'div',
    { class: 'splash', role: 'status', 'aria-live': 'polite' },
    h('span', { class: 'spinner', 'aria-hidden': 'true' }),
    h('span', { class: 'visually-hidden' }, 'Loading CloudDesk…'),
  );
}

function unavailable(message: string): HTMLElement {
  const retry = h('button', { type: 'button', class: 'btn btn-primary' }, icon('refresh', 16), 'Try again');
  retry.addEventListener('click', () => location.reload());
  return h(
    'div',
    { class: 'splash' },
    h(
      'div',
      { class: 'card card-narrow center-text', role: 'alert' },
      h('h1', { class: 'page-title' }, 'CloudDesk is not answering'),
      h('p', { class: 'muted' }, message),
      retry,
    ),
  );
}

function notFound(): View {
  return {
    title: 'Not found',
    element: h(
      'section',
      { class: 'page' },
      h('h1', { class: 'page-title' }, 'Page not found'),
      h('p', { class: 'muted' }, 'There is nothing at this address.'),
      h('a', { href: '/instances', 'data-link': true, class: 'btn btn-primary' }, 'Go to your instances'),
    ),
  };
}
