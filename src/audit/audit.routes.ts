// GET /api/admin/audit (admins: everyone's events, filtered) and GET /api/audit/me (a user's own
// trail: their sign-ins and from where, their instances and sessions), newest first, by cursor.
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '../errors/errors.js';
import { data, DataOf, Nullable, PageOf, strictObject, Timestamp } from '../http/schemas.js';
import { requireAdmin } from '../http/authenticate.js';
import { decodeCursor, page } from '../lib/cursor.js';
import { Cursor, Limit } from '../admin/admin.routes.js';
import type { AuditRepository, AuditRow } from '../store/audit.repository.js';
import { auditEventTypes } from './audit-events.js';

const EventType = Type.Union(auditEventTypes.map((t) => Type.Literal(t)));
const Time = Type.String({ minLength: 10, maxLength: 40, pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}' });
const Target = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' });
const MeQuery = strictObject({
  type: Type.Optional(EventType),
  from: Type.Optional(Time),
  to: Type.Optional(Time),
  cursor: Type.Optional(Cursor),
  limit: Type.Optional(Limit),
});
const AdminQuery = strictObject({
  actor: Type.Optional(Target),
  type: Type.Optional(EventType),
  target: Type.Optional(Target),
  from: Type.Optional(Time),
  to: Type.Optional(Time),
  cursor: Type.Optional(Cursor),
  limit: Type.Optional(Limit),
});

const AuditEvent = Type.Object({
  id: Type.String(),
  at: Timestamp,
  actor: Type.String({ description: 'A user id, or `system`' }),
  ip: Nullable(Type.String()),
  node: Type.String({ description: 'The gateway node that recorded it' }),
  type: Type.String({ description: `One of: ${auditEventTypes.join(', ')}` }),
  subjectUserId: Nullable(Type.String()),
  targetId: Nullable(Type.String()),
  details: Type.Record(Type.String(), Type.Unknown()),
});
const AuditPage = DataOf(PageOf(AuditEvent), 'A page of events, newest first');

export interface PublicAuditEvent {
  id: string;
  at: string;
  actor: string;
  ip: string | null;
  node: string;
  type: string;
  subjectUserId: string | null;
  targetId: string | null;
  details: Record<string, unknown>;
}

function present(r: AuditRow): PublicAuditEvent {
  return {
    id: r.id,
    at: new Date(Number(r.at)).toISOString(),
    actor: r.actor,
    ip: r.ip,
    node: r.node_id,
    type: r.type,
    subjectUserId: r.subject_user_id,
    targetId: r.target_id,
    details: JSON.parse(r.details) as Record<string, unknown>,
  };
}

function range(from: string | undefined, to: string | undefined): { from?: number; to?: number } {
  const parse = (v: string | undefined) => {
    if (v === undefined) return undefined;
    const t = Date.parse(v);
    if (Number.isNaN(t)) throw new AppError('AUDIT_RANGE_INVALID');
    return t;
  };
  const out = { from: parse(from), to: parse(to) };
  if (out.from !== undefined && out.to !== undefined && out.from > out.to)
    throw new AppError('AUDIT_RANGE_INVALID');
  return out;
}

export function registerAuditRoutes(
  app: FastifyInstance,
  deps: { audit: AuditRepository; authenticate: preHandlerAsyncHookHandler },
): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();

  const query = async (
    filter: { actor?: string; type?: string; target?: string; subjectUserId?: string },
    q: { from?: string; to?: string; cursor?: string; limit?: string },
  ) => {
    const limit = Number(q.limit ?? 50);
    const before = decodeCursor(q.cursor);
    const rows = await deps.audit.list({
      ...filter,
      ...range(q.from, q.to),
      before: before && { at: before.t, id: before.id },
      limit: limit + 1,
    });
    return page(rows, limit, (row) => ({ t: Number(row.at), id: row.id }), present);
  };

  r.get(
    '/api/admin/audit',
    {
      preHandler: [deps.authenticate, requireAdmin],
      schema: {
        summary: "Everyone's audit trail, filtered by actor, type, target and time",
        querystring: AdminQuery,
        errors: ['CURSOR_INVALID', 'AUDIT_RANGE_INVALID'],
        response: { 200: AuditPage },
      },
    },
    async (request) => {
      const { actor, type, target, ...rest } = request.query;
      return data(await query({ actor, type, target }, rest));
    },
  );

  r.get(
    '/api/audit/me',
    {
      preHandler: deps.authenticate,
      schema: {
        summary: "The caller's own audit trail: sign-ins and from where, instances, sessions, viewers",
        querystring: MeQuery,
        errors: ['CURSOR_INVALID', 'AUDIT_RANGE_INVALID'],
        response: { 200: AuditPage },
      },
    },
    async (request) => {
      const { type, ...rest } = request.query;
      return data(await query({ type, subjectUserId: request.userId }, rest));
    },
  );
}
