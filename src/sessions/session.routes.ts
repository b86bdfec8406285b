// /api/sessions: connect (start or reuse a desktop), tickets for reconnecting, list, end.
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { data, IdParams, strictObject } from '../http/schemas.js';
import { idPattern } from '../lib/ids.js';
import type { SessionService } from './session.service.js';

const ConnectBody = strictObject({
  instanceId: Type.String({ pattern: idPattern, maxLength: 36 }),
  desktopEnvironment: Type.String({ minLength: 1, maxLength: 32 }),
});

export function registerSessionRoutes(
  app: FastifyInstance,
  deps: {
    sessions: SessionService;
    authenticate: preHandlerAsyncHookHandler;
    onSetupDuration?: (ms: number) => void;
  },
): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { sessions } = deps;
  const preHandler = deps.authenticate;

  r.post('/api/sessions/connect', { preHandler, schema: { body: ConnectBody } }, async (request, reply) => {
    const started = performance.now();
    // A client that gives up while its connect waits for a start slot leaves the line.
    const gone = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) gone.abort();
    });
    const { created, ...result } = await sessions.connect(
      request.userId,
      request.body.instanceId,
      request.body.desktopEnvironment,
      gone.signal,
    );
    if (created) deps.onSetupDuration?.(performance.now() - started);
    request.log.info({ sessionId: result.sessionId, created }, 'session connect');
    return reply.status(created ? 201 : 200).send(data(result));
  });

  r.post('/api/sessions/:id/ticket', { preHandler, schema: { params: IdParams } }, async (request) =>
    data(await sessions.ticket(request.userId, request.params.id)),
  );

  r.get('/api/sessions/active', { preHandler }, async (request) =>
    data(await sessions.listActive(request.userId)),
  );

  r.get(
    '/api/sessions/history',
    {
      preHandler,
      schema: {
        querystring: strictObject({
          cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_-]+$' })),
          limit: Type.Optional(Type.String({ pattern: '^(?:[1-9][0-9]?|100)$' })),
        }),
      },
    },
    async (request) =>
      data(await sessions.history(request.userId, request.query.cursor, Number(request.query.limit ?? 20))),
  );

  r.get('/api/sessions/:id', { preHandler, schema: { params: IdParams } }, async (request) =>
    data(await sessions.get(request.userId, request.params.id)),
  );

  // Answers once the session is ended (its viewers closed everywhere); the desktop is stopped in the
  // background (desktop-stopper.ts), so the stop script is not on the request.
  r.post(
    '/api/sessions/disconnect/:id',
    { preHandler, schema: { params: IdParams } },
    async (request, reply) => {
      await sessions.disconnect(request.userId, request.params.id);
      return reply.send(data({ sessionId: request.params.id, status: 'ended' }));
    },
  );
}
