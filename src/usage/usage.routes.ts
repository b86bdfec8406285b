// /api/usage: the caller's usage per instance and per UTC day over a range of days.
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { data, strictObject } from '../http/schemas.js';
import type { UsageService } from './usage.service.js';

const Day = Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}$', maxLength: 10 });
const UsageQuery = strictObject({ from: Type.Optional(Day), to: Type.Optional(Day) });

export function registerUsageRoutes(
  app: FastifyInstance,
  deps: { usage: UsageService; authenticate: preHandlerAsyncHookHandler },
): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  r.get(
    '/api/usage',
    { preHandler: deps.authenticate, schema: { querystring: UsageQuery } },
    async (request) => data(await deps.usage.report(request.userId, request.query)),
  );
}
