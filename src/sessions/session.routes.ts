// /api/sessions: connect (start or reuse a desktop), tickets for reconnecting, list, end.
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { data, DataOf, IdParams, Nullable, PageOf, strictObject, Timestamp } from '../http/schemas.js';
import { idPattern } from '../lib/ids.js';
import { sshLoginErrorCodes } from '../ssh/ssh-errors.js';
import { addressErrorCodes } from '../instances/instance.routes.js';
import type { SessionService } from './session.service.js';

const ConnectBody = strictObject({
  instanceId: Type.String({ pattern: idPattern, maxLength: 36 }),
  desktopEnvironment: Type.String({ minLength: 1, maxLength: 32 }),
});

const WebsocketUrl = Type.String({
  description: 'Open it within TICKET_TTL_MS (30 s): `/vnc?ticket=…`, single-use, subprotocol `binary`',
});
const Connected = Type.Object({
  sessionId: Type.String(),
  websocketUrl: WebsocketUrl,
  display: Type.Integer({ description: 'The X display of the desktop on the instance' }),
});
const Usage = {
  bytesToViewer: Type.Number(),
  bytesFromViewer: Type.Number(),
  viewerSeconds: Type.Number(),
};
const EndReason = Nullable(
  Type.String({ description: 'e.g. `disconnected`, `idle-timeout`, `admin`, `instance-deleted`, `system`' }),
);
const SessionSchema = Type.Object({
  id: Type.String(),
  instanceId: Type.String(),
  instanceName: Type.Optional(Type.String({ description: 'In lists of live sessions' })),
  desktopEnvironment: Type.String(),
  display: Nullable(Type.Integer()),
  status: Type.Union([Type.Literal('starting'), Type.Literal('active'), Type.Literal('ended')]),
  startedAt: Nullable(Timestamp),
  createdAt: Timestamp,
  lastActivityAt: Timestamp,
  endedAt: Nullable(Timestamp),
  endReason: EndReason,
  viewers: Type.Integer({ description: 'Viewers connected now, on every gateway node' }),
  ...Usage,
});
const HistoryEntry = Type.Object({
  id: Type.String(),
  instanceId: Type.String(),
  instanceName: Nullable(Type.String({ description: 'null when the instance has since been deleted' })),
  desktopEnvironment: Type.String(),
  startedAt: Nullable(Timestamp),
  endedAt: Nullable(Timestamp),
  durationSeconds: Type.Integer(),
  endReason: EndReason,
  ...Usage,
});
const Ended = Type.Object({ sessionId: Type.String(), status: Type.Literal('ended') });

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

  r.post(
    '/api/sessions/connect',
    {
      preHandler,
      schema: {
        summary: 'Start a desktop on the instance, or reuse the running one',
        description:
          'Waits for a start slot (DESKTOP_STARTS_IN_FLIGHT); when the wait would be too long it answers 503 `OVERLOADED` with `Retry-After`. Always answered within DESKTOP_START_QUEUE_WAIT_MS of its arrival: a start still running then goes on, and the connect asked again after `Retry-After` gets its desktop.',
        body: ConnectBody,
        errors: [
          'INSTANCE_NOT_FOUND',
          'DESKTOP_ENVIRONMENT_UNKNOWN',
          'SESSION_LIMIT_REACHED',
          ...addressErrorCodes,
          ...sshLoginErrorCodes,
          'VNC_SERVER_MISSING',
          'DESKTOP_ENVIRONMENT_MISSING',
          'NO_FREE_DISPLAY',
          'DESKTOP_START_FAILED',
          'VNC_PROTOCOL_ERROR',
          'OVERLOADED',
          'BUSY',
        ],
        response: {
          200: DataOf(Connected, 'The desktop already running for this user and instance'),
          201: DataOf(Connected, 'A new desktop'),
        },
      },
    },
    async (request, reply) => {
      const started = performance.now();
      // The answer's bound counts from the request's arrival (Fastify's reply clock starts when the
      // route is matched, before the hooks and the body), not from here.
      const receivedAt = started - reply.elapsedTime;
      // A client that gives up while its connect waits for a start slot leaves the line.
      const gone = new AbortController();
      reply.raw.once('close', () => {
        if (!reply.raw.writableFinished) gone.abort();
      });
      const { created, ...result } = await sessions.connect(
        request.userId,
        request.body.instanceId,
        request.body.desktopEnvironment,
        { signal: gone.signal, receivedAt },
      );
      if (created) deps.onSetupDuration?.(performance.now() - started);
      request.log.info({ sessionId: result.sessionId, created }, 'session connect');
      return reply.status(created ? 201 : 200).send(data(result));
    },
  );

  r.post(
    '/api/sessions/:id/ticket',
    {
      preHandler,
      schema: {
        summary: 'A fresh WebSocket ticket for a live session (reconnecting)',
        params: IdParams,
        errors: ['SESSION_NOT_FOUND', 'SESSION_ENDED'],
        response: { 200: DataOf(Type.Object({ websocketUrl: WebsocketUrl }), 'The ticket') },
      },
    },
    async (request) => data(await sessions.ticket(request.userId, request.params.id)),
  );

  r.get(
    '/api/sessions/active',
    {
      preHandler,
      schema: {
        summary: "The caller's live sessions, with viewers and usage so far",
        response: { 200: DataOf(Type.Array(SessionSchema), 'The live sessions') },
      },
    },
    async (request) => data(await sessions.listActive(request.userId)),
  );

  r.get(
    '/api/sessions/history',
    {
      preHandler,
      schema: {
        summary: "The caller's ended sessions, newest first, a page at a time",
        errors: ['CURSOR_INVALID'],
        response: { 200: DataOf(PageOf(HistoryEntry), 'A page of ended sessions') },
        querystring: strictObject({
          cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_-]+$' })),
          limit: Type.Optional(Type.String({ pattern: '^(?:[1-9][0-9]?|100)$' })),
        }),
      },
    },
    async (request) =>
      data(await sessions.history(request.userId, request.query.cursor, Number(request.query.limit ?? 20))),
  );

  r.get(
    '/api/sessions/:id',
    {
      preHandler,
      schema: {
        summary: 'One session of the caller, live or ended',
        params: IdParams,
        errors: ['SESSION_NOT_FOUND'],
        response: { 200: DataOf(SessionSchema, 'The session') },
      },
    },
    async (request) => data(await sessions.get(request.userId, request.params.id)),
  );

  // Answers once the session is ended (its viewers closed everywhere); the desktop is stopped in the
  // background (desktop-stopper.ts), so the stop script is not on the request.
  r.post(
    '/api/sessions/disconnect/:id',
    {
      preHandler,
      schema: {
        summary: 'End a session: its viewers are closed (4000), its desktop stopped in the background',
        params: IdParams,
        errors: ['SESSION_NOT_FOUND', 'SESSION_ENDED'],
        response: { 200: DataOf(Ended, 'The session is ended') },
      },
    },
    async (request, reply) => {
      await sessions.disconnect(request.userId, request.params.id);
      return reply.send(data({ sessionId: request.params.id, status: 'ended' }));
    },
  );
}
