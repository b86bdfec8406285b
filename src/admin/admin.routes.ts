// /api/admin: users, live sessions, invites. Every route authenticates and then requires the admin
// role as the store has it now (403 FORBIDDEN otherwise); the web client's admin pages are only a view.
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { data, DataOf, Email, IdParams, Nullable, PageOf, strictObject, Timestamp } from '../http/schemas.js';
import { requireAdmin } from '../http/authenticate.js';
import { idPattern } from '../lib/ids.js';
import type { AuthService } from '../auth/auth.service.js';
import type { AdminService } from './admin.service.js';

export const Cursor = Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_-]+$' });
export const Limit = Type.String({ pattern: '^(?:[1-9][0-9]?|1[0-9]{2}|200)$' });
const Id = Type.String({ pattern: idPattern, maxLength: 36 });

const UsersQuery = strictObject({
  q: Type.Optional(Type.String({ maxLength: 254 })),
  role: Type.Optional(Type.Union([Type.Literal('admin'), Type.Literal('user')])),
  disabled: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
  cursor: Type.Optional(Cursor),
  limit: Type.Optional(Limit),
});
const UserPatch = Type.Object(
  {
    role: Type.Optional(Type.Union([Type.Literal('admin'), Type.Literal('user')])),
    disabled: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false, minProperties: 1 },
);
const SessionsQuery = strictObject({
  userId: Type.Optional(Id),
  instanceId: Type.Optional(Id),
  cursor: Type.Optional(Cursor),
  limit: Type.Optional(Limit),
});
const InviteBody = Type.Union([
  strictObject({
    email: Type.Optional(Email),
    expiresInHours: Type.Optional(Type.Integer({ minimum: 1, maximum: 720 })),
  }),
  Type.Null(),
]);

const Role = Type.Union([Type.Literal('admin'), Type.Literal('user')]);
const AdminUserSchema = Type.Object({
  id: Type.String(),
  email: Type.String(),
  role: Role,
  disabled: Type.Boolean(),
  createdAt: Timestamp,
  lastSignInAt: Nullable(Timestamp),
  liveSessions: Type.Integer(),
});
const AdminSessionSchema = Type.Object({
  id: Type.String(),
  user: Type.Object({ id: Type.String(), email: Type.String() }),
  instance: Type.Object({ id: Type.String(), name: Type.String(), host: Type.String() }),
  desktopEnvironment: Type.String(),
  display: Nullable(Type.Integer()),
  status: Type.Union([Type.Literal('starting'), Type.Literal('active'), Type.Literal('ended')]),
  viewers: Type.Array(Type.Object({ id: Type.String(), node: Type.String() }), {
    description: 'The viewers connected now and the gateway node of each',
  }),
  startedAt: Nullable(Timestamp),
  lastActivityAt: Timestamp,
  bytesToViewer: Type.Number(),
  bytesFromViewer: Type.Number(),
});
const InviteSchema = Type.Object({
  id: Type.String(),
  token: Type.String({ description: 'Shown only here, once; only its hash is stored' }),
  email: Nullable(Type.String({ description: 'When set, only this email can use the invite' })),
  expiresAt: Timestamp,
  url: Type.String({ description: "The web client's sign-up link with the token" }),
});

export function registerAdminRoutes(
  app: FastifyInstance,
  deps: { admin: AdminService; auth: AuthService; authenticate: preHandlerAsyncHookHandler },
): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { admin } = deps;
  const preHandler = [deps.authenticate, requireAdmin];

  r.get(
    '/api/admin/users',
    {
      preHandler,
      schema: {
        summary: 'Users, filtered by email text, role and disabled, oldest first',
        querystring: UsersQuery,
        errors: ['CURSOR_INVALID'],
        response: { 200: DataOf(PageOf(AdminUserSchema), 'A page of users') },
      },
    },
    async (request) => {
      const q = request.query;
      return data(
        await admin.listUsers({
          q: q.q?.trim() || undefined,
          role: q.role,
          disabled: q.disabled === undefined ? undefined : q.disabled === 'true',
          cursor: q.cursor,
          limit: Number(q.limit ?? 50),
        }),
      );
    },
  );

  r.patch(
    '/api/admin/users/:id',
    {
      preHandler,
      schema: {
        summary: "Change a user's role or disable (sign out everywhere) / enable the account",
        params: IdParams,
        body: UserPatch,
        errors: ['USER_NOT_FOUND', 'LAST_ADMIN', 'BUSY'],
        response: { 200: DataOf(AdminUserSchema, 'The user as changed') },
      },
    },
    async (request) => data(await admin.updateUser(request.params.id, request.body)),
  );

  r.get(
    '/api/admin/sessions',
    {
      preHandler,
      schema: {
        summary: 'Live sessions of everyone, filtered by user or instance',
        querystring: SessionsQuery,
        errors: ['CURSOR_INVALID'],
        response: { 200: DataOf(PageOf(AdminSessionSchema), 'A page of live sessions') },
      },
    },
    async (request) => {
      const q = request.query;
      return data(
        await admin.listSessions({
          userId: q.userId,
          instanceId: q.instanceId,
          cursor: q.cursor,
          limit: Number(q.limit ?? 50),
        }),
      );
    },
  );

  r.post(
    '/api/admin/sessions/:id/end',
    {
      preHandler,
      schema: {
        summary: "End anyone's session (reason `admin`)",
        params: IdParams,
        errors: ['SESSION_NOT_FOUND', 'SESSION_ENDED'],
        response: {
          200: DataOf(
            Type.Object({
              sessionId: Type.String(),
              status: Type.Literal('ended'),
              reason: Type.Literal('admin'),
            }),
            'The session is ended',
          ),
        },
      },
    },
    async (request) => {
      await admin.endSession(request.params.id);
      return data({ sessionId: request.params.id, status: 'ended' as const, reason: 'admin' as const });
    },
  );

  // A single-use sign-up link; the token is shown here once and stored only as a hash.
  r.post(
    '/api/admin/invites',
    {
      preHandler,
      schema: {
        summary: 'Create a single-use sign-up invite (optionally for one email)',
        body: InviteBody,
        response: { 201: DataOf(InviteSchema, 'The invite; its token is shown only now') },
      },
    },
    async (request, reply) => {
      const body = request.body ?? {};
      const invite = await deps.auth.createInvite(
        request.userId,
        body.email ?? null,
        body.expiresInHours ?? 72,
      );
      return reply
        .status(201)
        .send(data({ ...invite, url: `/sign-up?invite=${encodeURIComponent(invite.token)}` }));
    },
  );
}
