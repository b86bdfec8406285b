// /api/admin: users, live sessions, invites. Every route authenticates and then requires the admin
// role as the store has it now (403 FORBIDDEN otherwise); the web client's admin pages are only a view.
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { data, Email, IdParams, strictObject } from '../http/schemas.js';
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

export function registerAdminRoutes(
  app: FastifyInstance,
  deps: { admin: AdminService; auth: AuthService; authenticate: preHandlerAsyncHookHandler },
): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { admin } = deps;
  const preHandler = [deps.authenticate, requireAdmin];

  r.get('/api/admin/users', { preHandler, schema: { querystring: UsersQuery } }, async (request) => {
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
  });

  r.patch(
    '/api/admin/users/:id',
    { preHandler, schema: { params: IdParams, body: UserPatch } },
    async (request) => data(await admin.updateUser(request.params.id, request.body)),
  );

  r.get('/api/admin/sessions', { preHandler, schema: { querystring: SessionsQuery } }, async (request) => {
    const q = request.query;
    return data(
      await admin.listSessions({
        userId: q.userId,
        instanceId: q.instanceId,
        cursor: q.cursor,
        limit: Number(q.limit ?? 50),
      }),
    );
  });

  r.post('/api/admin/sessions/:id/end', { preHandler, schema: { params: IdParams } }, async (request) => {
    await admin.endSession(request.params.id);
    return data({ sessionId: request.params.id, status: 'ended', reason: 'admin' });
  });

  // A single-use sign-up link; the token is shown here once and stored only as a hash.
  r.post('/api/admin/invites', { preHandler, schema: { body: InviteBody } }, async (request, reply) => {
    const body = request.body ?? {};
    const invite = await deps.auth.createInvite(
      request.userId,
      body.email ?? null,
      body.expiresInHours ?? 72,
    );
    return reply
      .status(201)
      .send(data({ ...invite, url: `/sign-up?invite=${encodeURIComponent(invite.token)}` }));
  });
}
