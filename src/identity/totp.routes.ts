// /api/auth/2fa: TOTP for local accounts. Signed in: status, set-up (QR code + otpauth URL), confirm
// with a first code (recovery codes shown once), new recovery codes, turn off — the last two need a
// code. Not yet signed in: the second step of a sign-in (`verify` with the challenge the password
// step answered with MFA_REQUIRED) and the set-up AUTH_REQUIRE_2FA forces (`enrol`, then `verify`).
// Codes count against the sign-in rate limits of the account's email and the caller's IP.
// Admins: POST /api/admin/users/:id/2fa/reset.
import type { FastifyInstance, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '../errors/errors.js';
import { requireAdmin } from '../http/authenticate.js';
import { data, DataOf, IdParams, NoContent, strictObject } from '../http/schemas.js';
import { setRefreshTokenCookie, SignedIn } from '../auth/auth.routes.js';
import type { AuthService } from '../auth/auth.service.js';
import type { SignInGuard } from '../auth/sign-in-guard.js';
import type { UserRepository, UserRow } from '../store/user.repository.js';
import type { TotpService } from './totp.service.js';

// A 6-digit code or a recovery code (xxxxx-xxxxx, spaces and dashes forgiven).
const Code = Type.String({ minLength: 6, maxLength: 32, pattern: '^[0-9A-Za-z -]+$' });
const Challenge = Type.String({ minLength: 16, maxLength: 128, pattern: '^[A-Za-z0-9_-]+$' });
const CodeBody = strictObject({ code: Code });
const RecoveryCodes = Type.Array(Type.String(), {
  description: 'Ten single-use recovery codes, shown only now (stored hashed)',
});
const EnrolmentSchema = Type.Object({
  secret: Type.String({ description: 'Base32, for typing into an app by hand' }),
  otpauthUrl: Type.String(),
  qrSvg: Type.String({ description: 'The otpauth URL as a QR code (SVG markup)' }),
});
const codeErrors = ['MFA_CODE_INVALID', 'MFA_CHALLENGE_INVALID', 'RATE_LIMITED'] as const;

export function registerTotpRoutes(
  app: FastifyInstance,
  deps: {
    totp: TotpService;
    auth: AuthService;
    users: UserRepository;
    guard: SignInGuard;
    authenticate: preHandlerAsyncHookHandler;
    refreshTtlSeconds: number;
  },
): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { totp, auth, guard } = deps;

  const userOf = async (id: string): Promise<UserRow> => {
    const row = await deps.users.findById(id);
    if (!row) throw new AppError('MFA_CHALLENGE_INVALID');
    return row;
  };

  /** A code checked under the sign-in limits; a wrong one counts as a failed sign-in. */
  const checked = async <T>(request: FastifyRequest, user: UserRow, check: () => Promise<T>) => {
    await guard.beforeSignIn(user.email, request.ip);
    try {
      const result = await check();
      await guard.signInSucceeded(user.email, request.ip);
      return result;
    } catch (e) {
      if (e instanceof AppError && e.code === 'MFA_CODE_INVALID') {
        await guard.signInFailed(user.email, request.ip);
        auth.signInFailed(user.email, user.id, e.code);
      }
      throw e;
    }
  };
  const mustVerify = async (user: UserRow, code: string) => {
    if (!(await totp.verify(user, code))) throw new AppError('MFA_CODE_INVALID');
  };

  r.get(
    '/api/auth/2fa',
    {
      preHandler: deps.authenticate,
      schema: {
        summary: "Whether the caller's two-factor sign-in (TOTP) is on, and recovery codes left",
        response: {
          200: DataOf(
            Type.Object({ enabled: Type.Boolean(), recoveryCodesLeft: Type.Integer() }),
            'The two-factor status',
          ),
        },
      },
    },
    async (request) => data(await totp.status(request.userId)),
  );

  r.post(
    '/api/auth/2fa/setup',
    {
      preHandler: deps.authenticate,
      schema: {
        summary: 'Start turning TOTP on: a new secret as QR code and otpauth URL, confirmed by a first code',
        errors: ['MFA_ALREADY_ENABLED', 'MFA_CHALLENGE_INVALID'],
        response: { 200: DataOf(EnrolmentSchema, 'The secret waiting for its first code') },
      },
    },
    async (request) => data(await totp.beginEnrolment(await userOf(request.userId))),
  );

  r.post(
    '/api/auth/2fa/confirm',
    {
      preHandler: deps.authenticate,
      schema: {
        summary: 'Turn TOTP on with a first code: the recovery codes are shown once',
        body: CodeBody,
        errors: [...codeErrors, 'MFA_ALREADY_ENABLED', 'MFA_NOT_ENABLED'],
        response: { 200: DataOf(Type.Object({ recoveryCodes: RecoveryCodes }), 'TOTP is on') },
      },
    },
    async (request) => {
      const user = await userOf(request.userId);
      return data(await checked(request, user, () => totp.confirmEnrolment(user, request.body.code)));
    },
  );

  r.post(
    '/api/auth/2fa/recovery-codes',
    {
      preHandler: deps.authenticate,
      schema: {
        summary: 'New recovery codes (the old ones stop working); needs a code',
        body: CodeBody,
        errors: codeErrors,
        response: { 200: DataOf(Type.Object({ recoveryCodes: RecoveryCodes }), 'The new recovery codes') },
      },
    },
    async (request) => {
      const user = await userOf(request.userId);
      await checked(request, user, () => mustVerify(user, request.body.code));
      return data({ recoveryCodes: await totp.newRecoveryCodes(user.id) });
    },
  );

  r.post(
    '/api/auth/2fa/disable',
    {
      preHandler: deps.authenticate,
      schema: {
        summary: 'Turn TOTP off; needs a code',
        body: CodeBody,
        errors: codeErrors,
        response: { 204: NoContent },
      },
    },
    async (request, reply) => {
      const user = await userOf(request.userId);
      await checked(request, user, () => mustVerify(user, request.body.code));
      await totp.remove(user.id, 'self');
      return reply.status(204).send();
    },
  );

  r.post(
    '/api/auth/2fa/enrol',
    {
      schema: {
        summary: 'The TOTP set-up AUTH_REQUIRE_2FA asks for before a first sign-in (then `verify`)',
        body: strictObject({ challenge: Challenge }),
        errors: [
          'MFA_CHALLENGE_INVALID',
          'MFA_ALREADY_ENABLED',
          'RATE_LIMITED',
          'COORDINATION_UNAVAILABLE',
          'STORE_UNAVAILABLE',
        ],
        response: { 200: DataOf(EnrolmentSchema, 'The secret waiting for its first code') },
      },
    },
    async (request) => {
      await guard.attempt(request.ip);
      return data(await totp.enrolWithChallenge(request.body.challenge, userOf));
    },
  );

  r.post(
    '/api/auth/2fa/verify',
    {
      schema: {
        summary: 'The second step of a sign-in: the challenge of MFA_REQUIRED (or of `enrol`) and a code',
        body: strictObject({ challenge: Challenge, code: Code }),
        errors: [
          ...codeErrors,
          'ACCOUNT_DISABLED',
          'MFA_ALREADY_ENABLED',
          'MFA_NOT_ENABLED',
          'COORDINATION_UNAVAILABLE',
          'STORE_UNAVAILABLE',
        ],
        response: {
          200: DataOf(
            Type.Object({ ...SignedIn.properties, recoveryCodes: Type.Optional(RecoveryCodes) }),
            'Signed in (the refresh cookie is set); after an enrolment, with its recovery codes',
          ),
        },
      },
    },
    async (request, reply) => {
      await guard.attempt(request.ip);
      const { challenge, code } = request.body;
      const result = await totp.redeemChallenge(challenge, async ({ userId, purpose }) => {
        const user = await userOf(userId);
        const recoveryCodes = await checked(request, user, async () => {
          if (purpose === 'enrol') return (await totp.confirmEnrolment(user, code)).recoveryCodes;
          await mustVerify(user, code);
          return undefined;
        });
        const signedIn = await auth.completeSignIn(user, 'password', { secondFactor: 'totp' });
        return recoveryCodes ? { ...signedIn, recoveryCodes } : signedIn;
      });
      setRefreshTokenCookie(request, reply, result.refreshToken, deps.refreshTtlSeconds);
      return reply.send(data(result));
    },
  );

  r.post(
    '/api/admin/users/:id/2fa/reset',
    {
      preHandler: [deps.authenticate, requireAdmin],
      schema: {
        summary: "Turn a user's two-factor sign-in off (they set it up again)",
        params: IdParams,
        errors: ['USER_NOT_FOUND'],
        response: { 204: NoContent },
      },
    },
    async (request, reply) => {
      const user = await deps.users.findById(request.params.id);
      if (!user) throw new AppError('USER_NOT_FOUND');
      await totp.remove(user.id, 'admin');
      return reply.status(204).send();
    },
  );
}
