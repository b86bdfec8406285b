// /api/sessions/:id/shares (the owner makes and lists shares), /api/shares/:id (revoke) and
// /api/shares/:token (a guest reads the invitation and exchanges the token for a WebSocket ticket).
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { data, IdParams, strictObject } from '../http/schemas.js';
import type { ShareService } from './share.service.js';

const CreateShareBody = strictObject({
  mode: Type.Union([Type.Literal('view'), Type.Literal('control')]),
  expiresInMinutes: Type.Optional(Type.Integer({ minimum: 1, maximum: 525_600 })),
  singleUse: Type.Optional(Type.Boolean()),
});

// A token path segment; a wrong shape is SHARE_INVALID from the service, not a schema 400 that says less.
const TokenParams = strictObject({ token: Type.String({ minLength: 1, maxLength: 128 }) });

const TicketBody = Type.Union([
  strictObject({ displayName: Type.Optional(Type.String({ maxLength: 200 })) }),
  Type.Null(),
]);

export function registerShareRoutes(
  app: FastifyInstance,
  deps: {
    shares: ShareService;
    authenticate: preHandlerAsyncHookHandler;
  },
): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { shares, authenticate } = deps;

  r.post(
    '/api/sessions/:id/shares',
    { preHandler: authenticate, schema: { params: IdParams, body: CreateShareBody } },
    async (request, reply) =>
      reply.status(201).send(data(await shares.create(request.userId, request.params.id, request.body))),
  );

  r.get(
    '/api/sessions/:id/shares',
    { preHandler: authenticate, schema: { params: IdParams } },
    async (request) => data(await shares.list(request.userId, request.params.id)),
  );

  r.delete(
    '/api/shares/:id',
    { preHandler: authenticate, schema: { params: IdParams } },
    async (request, reply) => {
      await shares.revoke(request.userId, request.params.id);
      return reply.status(204).send();
    },
  );

  r.get('/api/shares/:token', { schema: { params: TokenParams } }, async (request) =>
    data(await shares.invitation(request.params.token)),
  );

  // Signed in (an Authorization header) or, with SHARE_GUESTS=anyone, anonymous with a display name.
  r.post(
    '/api/shares/:token/ticket',
    { schema: { params: TokenParams, body: Type.Optional(TicketBody) } },
    async (request, reply) => {
      const signedIn = request.headers.authorization !== undefined;
      if (signedIn) await authenticate.call(app, request, reply);
      const guest = signedIn ? { userId: request.userId } : { displayName: request.body?.displayName };
      return data(await shares.exchange(request.params.token, guest));
    },
  );
}
