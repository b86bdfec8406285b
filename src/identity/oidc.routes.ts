// /api/auth/oidc: the browser's two legs of company sign-in. `start` sends the browser to the provider
// and remembers the sign-in's state in a short cookie (SameSite=Lax: it must come back on the
// provider's top-level redirect); `callback` finishes it on whichever node it lands, sets the refresh
// cookie and sends the browser to the web client, which trades the cookie for an access token. A
// refusal goes back to the sign-in page with its code (`/sign-in?signInError=CODE`), never as JSON
// to a person looking at a browser tab.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isAppError } from '../errors/errors.js';
import type { SignInGuard } from '../auth/sign-in-guard.js';
import { setRefreshTokenCookie } from '../auth/auth.routes.js';
import { OIDC_SIGN_IN_TTL_MS, type OidcService } from './oidc.service.js';

export const OIDC_STATE_COOKIE = 'cd_oidc';
const COOKIE_PATH = '/api/auth/oidc';
export const CALLBACK_PATH = '/api/auth/oidc/callback';

export function registerOidcRoutes(
  app: FastifyInstance,
  deps: {
    oidc: OidcService;
    guard: SignInGuard;
    refreshTtlSeconds: number;
    /** OIDC_REDIRECT_URI, or null: this request's own origin. */
    redirectUri: string | null;
  },
): void {
  const { oidc, guard } = deps;
  const redirectUriOf = (request: FastifyRequest) =>
    deps.redirectUri ?? `${request.protocol}://${request.host}${CALLBACK_PATH}`;

  const refused = (request: FastifyRequest, reply: FastifyReply, e: unknown) => {
    const code = isAppError(e) ? e.code : 'INTERNAL';
    if (!isAppError(e) || e.log) request.log.error({ err: e }, 'company sign-in failed');
    else
      request.log.info(
        { code, cause: e.cause instanceof Error ? e.cause.message : undefined },
        'company sign-in refused',
      );
    return reply.redirect(`/sign-in?signInError=${encodeURIComponent(code)}`, 302);
  };

  // Both answer with a redirect, also on a refusal (to the sign-in page, its code in `signInError`).
  const redirect = (summary: string, to: string) => ({
    schema: {
      summary,
      tags: ['auth'],
      response: {
        302: {
          type: 'null',
          'x-response-description': `${to}; a refusal goes to /sign-in?signInError=<code>`,
          headers: { Location: { type: 'string' } },
        },
      },
    },
  });

  const startRoute = redirect(
    'Company sign-in (OpenID Connect): off to the identity provider (PKCE, state, nonce)',
    "To the identity provider's authorization endpoint",
  );
  app.get('/api/auth/oidc/start', startRoute, async (request, reply) => {
    let started: { url: URL; state: string };
    try {
      await guard.attempt(request.ip);
      started = await oidc.start(redirectUriOf(request));
    } catch (e) {
      return refused(request, reply, e);
    }
    const { url, state } = started;
    reply.setCookie(OIDC_STATE_COOKIE, state, {
      httpOnly: true,
      sameSite: 'lax',
      secure: request.protocol === 'https',
      path: COOKIE_PATH,
      maxAge: OIDC_SIGN_IN_TTL_MS / 1000,
    });
    return reply.redirect(url.href, 302);
  });

  const callbackRoute = redirect(
    "The identity provider's answer: signs in (the account made on first use) and sets the refresh cookie",
    'To /instances?signedIn=oidc',
  );
  app.get(CALLBACK_PATH, callbackRoute, async (request, reply) => {
    reply.clearCookie(OIDC_STATE_COOKIE, { path: COOKIE_PATH });
    const query = new URLSearchParams(request.url.slice(request.url.indexOf('?') + 1));
    try {
      await guard.attempt(request.ip);
      const result = await oidc.finish(
        request.url.includes('?') ? query : new URLSearchParams(),
        request.cookies[OIDC_STATE_COOKIE],
      );
      setRefreshTokenCookie(request, reply, result.refreshToken, deps.refreshTtlSeconds);
      return await reply.redirect('/instances?signedIn=oidc', 302);
    } catch (e) {
      return refused(request, reply, e);
    }
  });
}
