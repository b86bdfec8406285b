// /api/instances: the owner's instances. Credentials go in, never come out.
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { ErrorCode } from '../errors/errors.js';
import {
  data,
  DataOf,
  Fingerprint,
  IdParams,
  NoContent,
  Nullable,
  strictObject,
  Timestamp,
} from '../http/schemas.js';
import { sshLoginErrorCodes } from '../ssh/ssh-errors.js';
import { desktopEnvironmentIds } from '../desktop/desktop-environments.js';
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

const InstanceSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  host: Type.String(),
  port: Type.Integer(),
  username: Type.String(),
  auth: Type.Object({
    type: Type.Union([Type.Literal('password'), Type.Literal('privateKey')]),
  }),
  hostKeyFingerprint: Nullable(
    Type.String({ description: 'The pinned SSH host key; null until the first login pins one' }),
  ),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
const DesktopEnvironment = Type.Union(desktopEnvironmentIds.map((id) => Type.Literal(id)));
const TestResult = Type.Object({
  reachable: Type.Literal(true),
  hostKeyFingerprint: Type.String({ description: 'The host key this login saw' }),
  hostKeyStatus: Type.Union([Type.Literal('pinned'), Type.Literal('new')], {
    description: '`new`: nothing pinned yet, confirm the fingerprint (it is pinned on the first connect)',
  }),
  vncServer: Nullable(
    Type.Object({
      kind: Type.Literal('tigervnc'),
      version: Nullable(Type.String()),
      unixSocket: Type.Boolean({ description: 'Whether Xvnc can listen on a Unix socket' }),
    }),
  ),
  desktopEnvironments: Type.Array(DesktopEnvironment, { description: 'The desktops installed there' }),
});

/** The address guard's refusals (instances/address-guard.ts): on every route that takes or dials a host. */
export const addressErrorCodes = [
  'INSTANCE_ADDRESS_FORBIDDEN',
  'INSTANCE_HOST_UNRESOLVABLE',
] as const satisfies readonly ErrorCode[];

export function registerInstanceRoutes(
  app: FastifyInstance,
  deps: { instances: InstanceService; sessions: SessionService; authenticate: preHandlerAsyncHookHandler },
): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { instances } = deps;
  const preHandler = deps.authenticate;

  r.get(
    '/api/instances',
    {
      preHandler,
      schema: {
        summary: "The caller's instances",
        response: { 200: DataOf(Type.Array(InstanceSchema), 'The instances, oldest first') },
      },
    },
    async (request) => data(await instances.list(request.userId)),
  );

  r.post(
    '/api/instances',
    {
      preHandler,
      schema: {
        summary: 'Register an instance: SSH address and credentials (a password or a private key)',
        body: NewInstanceBody,
        errors: [...addressErrorCodes, 'INVALID_PRIVATE_KEY'],
        response: { 201: DataOf(InstanceSchema, 'The instance; credentials are never returned') },
      },
    },
    async (request, reply) =>
      reply.status(201).send(data(await instances.create(request.userId, request.body))),
  );

  r.get(
    '/api/instances/:id',
    {
      preHandler,
      schema: {
        summary: 'One instance',
        params: IdParams,
        errors: ['INSTANCE_NOT_FOUND'],
        response: { 200: DataOf(InstanceSchema, 'The instance') },
      },
    },
    async (request) => data(await instances.get(request.userId, request.params.id)),
  );

  r.patch(
    '/api/instances/:id',
    {
      preHandler,
      schema: {
        summary: 'Change an instance (`hostKeyFingerprint: null` forgets the pinned host key)',
        params: IdParams,
        body: PatchInstanceBody,
        errors: ['INSTANCE_NOT_FOUND', ...addressErrorCodes, 'INVALID_PRIVATE_KEY'],
        response: { 200: DataOf(InstanceSchema, 'The instance as changed') },
      },
    },
    async (request) => data(await instances.update(request.userId, request.params.id, request.body)),
  );

  r.delete(
    '/api/instances/:id',
    {
      preHandler,
      schema: {
        summary:
          'Delete an instance; a desktop start in flight for it finishes first, then its live session is ended and all its desktops stopped',
        params: IdParams,
        errors: ['INSTANCE_NOT_FOUND', 'BUSY'],
        response: { 204: NoContent },
      },
    },
    async (request, reply) => {
      await deps.sessions.deleteInstance(request.userId, request.params.id);
      return reply.status(204).send();
    },
  );

  r.post(
    '/api/instances/:id/test',
    {
      preHandler,
      schema: {
        summary: 'Log in over SSH: host key, VNC server and desktop environments found',
        params: IdParams,
        errors: ['INSTANCE_NOT_FOUND', ...addressErrorCodes, ...sshLoginErrorCodes, 'DESKTOP_START_FAILED'],
        response: { 200: DataOf(TestResult, 'The login worked; what the instance has') },
      },
    },
    async (request) => data(await instances.test(request.userId, request.params.id)),
  );
}
