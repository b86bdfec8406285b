// /api/auth: register, login, refresh, logout, me. The refresh token is returned in the body (API
// clients) and also set as an httpOnly SameSite=Strict cookie scoped to /api/auth, so the web client
// never has to keep it where page scripts can read it. Refresh and logout take the token from the
// body or, with no body at all, from the cookie; a cookie-authenticated call must also come from an
// allowed Origin (or none: a non-browser client), a second defence beside SameSite=Strict.
import type { FastifyInstance, FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '../errors/errors.js';
import { data, DataOf, Email, NoContent, Password, strictObject } from '../http/schemas.js';
import type { AuthService } from './auth.service.js';
import type { SignInGuard } from './sign-in-guard.js';

export const REFRESH_COOKIE = 'cd_refresh';

const Credentials = strictObject({ email: Email, password: Type.String({ minLength: 1, maxLength: 256 }) });
const Registration = strictObject({
  email: Email,
  password: Password,
  inviteToken: Type.Optional(Type.String({ minLength: 16, maxLength: 128, pattern: '^[A-Za-z0-9_-]+$' })),
});
// No body at all (no content-type either) reaches the validator as null: the cookie-only call.
const RefreshBody = Type.Union([
  strictObject({ refreshToken: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })) }),
  Type.Null(),
]);

/** The refresh token's cookie: httpOnly, SameSite=Strict, only ever sent to /api/auth. */
export function setRefreshTokenCookie(
  request: FastifyRequest,
  reply: FastifyReply,
  token: string,
  ttlSeconds: number,
): FastifyReply {
  return reply.setCookie(REFRESH_COOKIE, token, {
    httpOnly: true,
    sameSite: 'strict',
    secure: request.protocol === 'https',
    path: '/api/auth',
    maxAge: ttlSeconds,
  });
}

export const PublicUserSchema = Type.Object({
  id: Type.String(),
  email: Type.String(),
  role: Type.Union([Type.Literal('admin'), Type.Literal('user')]),
});
const TokenPairSchema = Type.Object({
  accessToken: Type.String({ description: 'Send as `Authorization: Bearer …`; lives JWT_ACCESS_EXPIRY' }),
  refreshToken: Type.String({ description: 'Also set as the httpOnly `cd_refresh` cookie' }),
});
export const SignedIn = Type.Object({ user: PublicUserSchema, ...TokenPairSchema.properties });
// Refresh and logout take the token in the body or, with no body, from the cookie.
const bodyOrCookie: Record<string, string[]>[] = [{ refreshCookie: [] }, {}];

export function registerAuthRoutes(
  app: FastifyInstance,
  deps: {
    auth: AuthService;
    guard: SignInGuard;
    authenticate: preHandlerAsyncHookHandler;
    refreshTtlSeconds: number;
    registration: 'open' | 'closed';
    /** What the sign-in page offers: passwords (AUTH_LOCAL) and/or "Sign in with <oidc>". */
    methods: { local: boolean; oidc: { name: string } | null };
    publishSignOut: (userId: string) => Promise<void>;
    /** The gateway's origin policy (http/origin.ts): its own host and CORS_ORIGIN. */
    isOriginAllowed: (origin: string, host: string | undefined) => boolean;
  },
): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { auth, guard } = deps;

  const setRefreshCookie = (request: FastifyRequest, reply: FastifyReply, token: string) =>
    setRefreshTokenCookie(request, reply, token, deps.refreshTtlSeconds);
  /**
   * The refresh token of a refresh or logout: the body's (API clients), else the cookie's. The
   * cookie is sent by the browser on its own, so a call that relies on it must come from an allowed
   * Origin; one with no Origin header is not a browser's (browsers send it on every POST).
   */
  const refreshTokenOf = (
    request: FastifyRequest,
    body: { refreshToken?: string } | null | undefined,
  ): string | undefined => {
    if (body?.refreshToken) return body.refreshToken;
    const cookie = request.cookies[REFRESH_COOKIE];
    if (!cookie) return undefined;
    const origin = request.headers.origin;
    if (origin !== undefined && !deps.isOriginAllowed(origin, request.headers.host)) {
      throw new AppError('FORBIDDEN_ORIGIN');
    }
    return cookie;
  };

  r.post(
    '/api/auth/register',
    {
      schema: {
        summary: 'Create an account (with an invite when registration is closed) and sign in',
        body: Registration,
        errors: [
          'LOCAL_AUTH_DISABLED',
          'MFA_ENROLMENT_REQUIRED',
          'REGISTRATION_CLOSED',
          'INVITE_INVALID',
          'EMAIL_TAKEN',
          'RATE_LIMITED',
          'OVERLOADED',
          'COORDINATION_UNAVAILABLE',
          'STORE_UNAVAILABLE',
        ],
        response: { 201: DataOf(SignedIn, 'Signed up and signed in; the refresh cookie is set') },
      },
    },
    async (request, reply) => {
      await guard.attempt(request.ip);
      const { email, password, inviteToken } = request.body;
      const result = await auth.register(email, password, { inviteToken });
      setRefreshCookie(request, reply, result.refreshToken);
      return reply.status(201).send(data(result));
    },
  );

  r.post(
    '/api/auth/login',
    {
      schema: {
        summary: 'Sign in with email and password',
        body: Credentials,
        description:
          'With two-factor sign-in on, a right password answers 401 `MFA_REQUIRED` (or 403 `MFA_ENROLMENT_REQUIRED` under AUTH_REQUIRE_2FA) with `details.challenge` for the second step; no token before it.',
        errors: [
          'LOCAL_AUTH_DISABLED',
          'MFA_REQUIRED',
          'MFA_ENROLMENT_REQUIRED',
          'INVALID_CREDENTIALS',
          'ACCOUNT_DISABLED',
          'RATE_LIMITED',
          'OVERLOADED',
          'COORDINATION_UNAVAILABLE',
          'STORE_UNAVAILABLE',
        ],
        response: { 200: DataOf(SignedIn, 'Signed in; the refresh cookie is set') },
      },
    },
    async (request, reply) => {
      const { email, password } = request.body;
      try {
        await guard.beforeSignIn(email, request.ip);
      } catch (e) {
        if (e instanceof AppError && e.code === 'RATE_LIMITED') auth.signInFailed(email, null, e.code);
        throw e;
      }
      try {
        const result = await auth.login(email, password);
        await guard.signInSucceeded(email, request.ip);
        setRefreshCookie(request, reply, result.refreshToken);
        return reply.send(data(result));
      } catch (e) {
        if (e instanceof AppError && e.code === 'INVALID_CREDENTIALS')
          await guard.signInFailed(email, request.ip);
        throw e;
      }
    },
  );

  r.post(
    '/api/auth/refresh',
    {
      schema: {
        summary: 'Rotate the refresh token: a new access and refresh token',
        description:
          'A reused refresh token ends every session of its sign-in (`REFRESH_TOKEN_REUSED`), except the one just rotated, presented again within REFRESH_REUSE_GRACE_MS.',
        body: RefreshBody,
        security: bodyOrCookie,
        errors: [
          'UNAUTHENTICATED',
          'INVALID_TOKEN',
          'REFRESH_TOKEN_REUSED',
          'ACCOUNT_DISABLED',
          'FORBIDDEN_ORIGIN',
          'RATE_LIMITED',
          'COORDINATION_UNAVAILABLE',
          'STORE_UNAVAILABLE',
        ],
        response: { 200: DataOf(TokenPairSchema, 'The new pair; the refresh cookie is replaced') },
      },
    },
    async (request, reply) => {
      await guard.attempt(request.ip);
      const token = refreshTokenOf(request, request.body);
      if (!token) throw new AppError('UNAUTHENTICATED', { message: 'No refresh token' });
      const pair = await auth.refresh(token);
      setRefreshCookie(request, reply, pair.refreshToken);
      return reply.send(data(pair));
    },
  );

  r.post(
    '/api/auth/logout',
    {
      schema: {
        summary: "Sign out: revoke the refresh token's sign-in (unknown tokens are ignored)",
        body: RefreshBody,
        security: bodyOrCookie,
        errors: ['FORBIDDEN_ORIGIN', 'STORE_UNAVAILABLE'],
        response: { 204: NoContent },
      },
    },
    async (request, reply) => {
      const token = refreshTokenOf(request, request.body);
      if (token) await auth.logout(token);
      reply.clearCookie(REFRESH_COOKIE, { path: '/api/auth' });
      return reply.status(204).send();
    },
  );

  // Every refresh token of the user revoked, and their viewers closed on every node (4001).
  r.post(
    '/api/auth/logout-all',
    {
      preHandler: deps.authenticate,
      schema: {
        summary: 'Sign out everywhere: every refresh token revoked, every viewer closed (4001)',
        response: { 204: NoContent },
      },
    },
    async (request, reply) => {
      await auth.signOutEverywhere(request.userId);
      await deps.publishSignOut(request.userId);
      reply.clearCookie(REFRESH_COOKIE, { path: '/api/auth' });
      return reply.status(204).send();
    },
  );

  // What the sign-up page needs to know before anyone is signed in.
  r.get(
    '/api/auth/registration',
    {
      schema: {
        summary: 'Whether anyone may sign up (`open`) or only with an invite (`closed`)',
        response: {
          200: DataOf(
            Type.Object({ mode: Type.Union([Type.Literal('open'), Type.Literal('closed')]) }),
            'The registration mode',
          ),
        },
      },
    },
    () => Promise.resolve(data({ mode: deps.registration })),
  );

  r.get(
    '/api/auth/methods',
    {
      schema: {
        summary: 'How one may sign in here: passwords, company sign-in (OIDC), and the registration mode',
        response: {
          200: DataOf(
            Type.Object({
              local: Type.Boolean({ description: 'Password sign-in (AUTH_LOCAL)' }),
              oidc: Type.Union([Type.Object({ name: Type.String() }), Type.Null()], {
                description: 'The company sign-in offered ("Sign in with <name>"), or null',
              }),
              registration: Type.Union([Type.Literal('open'), Type.Literal('closed')]),
            }),
            'The sign-in methods',
          ),
        },
      },
    },
    () => Promise.resolve(data({ ...deps.methods, registration: deps.registration })),
  );

  r.get(
    '/api/auth/me',
    {
      preHandler: deps.authenticate,
      schema: { summary: 'The signed-in user', response: { 200: DataOf(PublicUserSchema, 'The user') } },
    },
    async (request) => data(await auth.me(request.userId)),
  );
}
