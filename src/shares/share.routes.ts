// /api/sessions/:id/shares (the owner makes and lists shares), /api/shares/:id (revoke) and
// /api/shares/:token (a guest reads the invitation and exchanges the token for a WebSocket ticket).
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { data, DataOf, IdParams, NoContent, Nullable, strictObject, Timestamp } from '../http/schemas.js';
import type { ShareService } from './share.service.js';

const CreateShareBody = strictObject({
  mode: Type.Union([Type.Literal('view'), Type.Literal('control')]),
  expiresInMinutes: Type.Optional(Type.Integer({ minimum: 1, maximum: 525_600 })),
  singleUse: Type.Optional(Type.Boolean()),
});

// A token path segment; a wrong shape is SHARE_INVALID from the service, not a schema 400 that says less.
const TokenParams = strictObject({ token: Type.String({ minLength: 1, maxLength: 128 }) });

const GuestParams = strictObject({
  id: IdParams.properties.id,
  viewerId: Type.String({ pattern: '^[A-Za-z0-9_-]{1,32}$' }),
});

const TicketBody = Type.Union([
  strictObject({ displayName: Type.Optional(Type.String({ maxLength: 200 })) }),
  Type.Null(),
]);

const Mode = Type.Union([Type.Literal('view'), Type.Literal('control')]);
const CreatedShare = Type.Object({
  id: Type.String(),
  url: Type.String({
    description: "The web client's landing page, the token after `#` (never sent to a server)",
  }),
  mode: Mode,
  singleUse: Type.Boolean(),
  expiresAt: Timestamp,
});
const PublicShare = Type.Object({
  id: Type.String(),
  sessionId: Type.String(),
  mode: Mode,
  singleUse: Type.Boolean(),
  createdAt: Timestamp,
  expiresAt: Timestamp,
  usedAt: Nullable(Timestamp),
  revokedAt: Nullable(Timestamp),
  status: Type.Union([
    Type.Literal('active'),
    Type.Literal('expired'),
    Type.Literal('revoked'),
    Type.Literal('used'),
  ]),
  guests: Type.Array(Type.Object({ viewerId: Type.String(), name: Type.String(), node: Type.String() }), {
    description: 'Guests watching now, on every gateway node',
  }),
});
const linkErrors = [
  'SHARE_INVALID',
  'SHARE_REVOKED',
  'SHARE_EXPIRED',
  'SHARE_USED',
  'STORE_UNAVAILABLE',
] as const;

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
    {
      preHandler: authenticate,
      schema: {
        summary: 'Share a live session: a link that lets a guest watch (`view`) or also control it',
        params: IdParams,
        body: CreateShareBody,
        errors: ['SESSION_NOT_FOUND', 'SESSION_ENDED', 'SESSION_NOT_READY', 'SHARE_EXPIRY_TOO_LONG'],
        response: { 201: DataOf(CreatedShare, 'The share; its link is shown only now') },
      },
    },
    async (request, reply) =>
      reply.status(201).send(data(await shares.create(request.userId, request.params.id, request.body))),
  );

  r.get(
    '/api/sessions/:id/shares',
    {
      preHandler: authenticate,
      schema: {
        summary: "A session's shares and the guests watching through each",
        params: IdParams,
        errors: ['SESSION_NOT_FOUND'],
        response: { 200: DataOf(Type.Array(PublicShare), 'The shares') },
      },
    },
    async (request) => data(await shares.list(request.userId, request.params.id)),
  );

  r.delete(
    '/api/shares/:id',
    {
      preHandler: authenticate,
      schema: {
        summary: "Revoke a share: its guests' viewers are closed",
        params: IdParams,
        errors: ['SHARE_NOT_FOUND'],
        response: { 204: NoContent },
      },
    },
    async (request, reply) => {
      await shares.revoke(request.userId, request.params.id);
      return reply.status(204).send();
    },
  );

  r.delete(
    '/api/sessions/:id/guests/:viewerId',
    {
      preHandler: authenticate,
      schema: {
        summary: "End one guest watching the caller's session: its viewer is closed (4002) on any node",
        params: GuestParams,
        errors: ['SESSION_NOT_FOUND', 'GUEST_NOT_FOUND'],
        response: { 204: NoContent },
      },
    },
    async (request, reply) => {
      await shares.endGuest(request.userId, request.params.id, request.params.viewerId);
      return reply.status(204).send();
    },
  );

  r.get(
    '/api/shares/:token',
    {
      schema: {
        summary: "A share link's invitation, for its landing page (no sign-in)",
        params: TokenParams,
        errors: linkErrors,
        response: {
          200: DataOf(
            Type.Object({
              ownerName: Type.String(),
              mode: Mode,
              expiresAt: Timestamp,
              guests: Type.Union([Type.Literal('signed-in'), Type.Literal('anyone')], {
                description:
                  'Who may join: signed-in users only, or anyone with a display name (SHARE_GUESTS)',
              }),
            }),
            'The invitation',
          ),
        },
      },
    },
    async (request) => data(await shares.invitation(request.params.token)),
  );

  // Signed in (an Authorization header) or, with SHARE_GUESTS=anyone, anonymous with a display name.
  r.post(
    '/api/shares/:token/ticket',
    {
      schema: {
        summary: 'Join through a share link: a WebSocket ticket for the shared session',
        description:
          'Signed in (a bearer token), or with SHARE_GUESTS=anyone anonymous with a `displayName`.',
        params: TokenParams,
        body: Type.Optional(TicketBody),
        security: [{ bearerAuth: [] }, {}],
        errors: [
          ...linkErrors,
          'SHARE_SIGN_IN_REQUIRED',
          'SHARE_GUEST_NAME_REQUIRED',
          'SESSION_ENDED',
          'SESSION_NOT_READY',
          'SESSION_VIEWERS_FULL',
          'UNAUTHENTICATED',
          'INVALID_TOKEN',
          'TOKEN_EXPIRED',
          'ACCOUNT_DISABLED',
          'RATE_LIMITED',
          'COORDINATION_UNAVAILABLE',
        ],
        response: {
          200: DataOf(
            Type.Object({
              sessionId: Type.String(),
              websocketUrl: Type.String(),
              mode: Mode,
              ownerName: Type.String(),
              expiresAt: Timestamp,
            }),
            'The ticket (single-use, TICKET_TTL_MS)',
          ),
        },
      },
    },
    async (request, reply) => {
      const signedIn = request.headers.authorization !== undefined;
      if (signedIn) await authenticate.call(app, request, reply);
      const guest = signedIn ? { userId: request.userId } : { displayName: request.body?.displayName };
      return data(await shares.exchange(request.params.token, guest));
    },
  );
}
