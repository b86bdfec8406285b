// /api/instances: the owner's instances. Credentials go in, never come out.
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { data, Fingerprint, IdParams, strictObject } from '../http/schemas.js';
import type { SessionService } from '../sessions/session.service.js';
import type { InstanceService } from './instance.service.js';

const Host = Type.String({ minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9.:\\-\\[\\]]+$' });
const Username = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._][A-Za-z0-9._-]*$' });
const Auth = Type.Union([
  strictObject({ type: Type.Literal('password'), password: Type.String({ minLength: 1, maxLength: 1024 }) }),
  strictObject({
    type: Type.Literal('privateKey'),
    privateKey: Type.String({ minLength: 1, maxLength: 16_384 }),
    passphrase: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
  }),
]);
const fields = {
  name: Type.String({ minLength: 1, maxLength: 100 }),
  host: Host,
  port: Type.Integer({ minimum: 1, maximum: 65535 }),
  username: Username,
  auth: Auth,
};
const NewInstanceBody = strictObject({
  ...fields,
  port: Type.Optional(fields.port),
  hostKeyFingerprint: Type.Optional(Fingerprint),
});
const PatchInstanceBody = strictObject({
  name: Type.Optional(fields.name),
  host: Type.Optional(fields.host),
  port: Type.Optional(fields.port),
  username: Type.Optional(fields.username),
  auth: Type.Optional(fields.auth),
  // null forgets the pinned key: the next connect pins whatever the instance presents.
  hostKeyFingerprint: Type.Optional(Type.Union([Fingerprint, Type.Null()])),
});

export function registerInstanceRoutes(
  app: FastifyInstance,
  deps: { instances: InstanceService; sessions: SessionService; authenticate: preHandlerAsyncHookHandler },
): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { instances } = deps;
  const preHandler = deps.authenticate;

  r.get('/api/instances', { preHandler }, async (request) => data(await instances.list(request.userId)));

  r.post('/api/instances', { preHandler, schema: { body: NewInstanceBody } }, async (request, reply) =>
    reply.status(201).send(data(await instances.create(request.userId, request.body))),
  );

  r.get('/api/instances/:id', { preHandler, schema: { params: IdParams } }, async (request) =>
    data(await instances.get(request.userId, request.params.id)),
  );

  r.patch(
    '/api/instances/:id',
    { preHandler, schema: { params: IdParams, body: PatchInstanceBody } },
    async (request) => data(await instances.update(request.userId, request.params.id, request.body)),
  );

  r.delete('/api/instances/:id', { preHandler, schema: { params: IdParams } }, async (request, reply) => {
    await instances.getRow(request.userId, request.params.id);
    await deps.sessions.endAllForInstance(request.userId, request.params.id);
    await instances.delete(request.userId, request.params.id);
    return reply.status(204).send();
  });

  r.post('/api/instances/:id/test', { preHandler, schema: { params: IdParams } }, async (request) =>
    data(await instances.test(request.userId, request.params.id)),
  );
}
