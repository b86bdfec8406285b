// /api/usage: the caller's usage per instance and per UTC day over a range of days.
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { data, DataOf, Nullable, strictObject } from '../http/schemas.js';
import type { UsageService } from './usage.service.js';

const Day = Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}$', maxLength: 10 });
const UsageQuery = strictObject({ from: Type.Optional(Day), to: Type.Optional(Day) });
const Totals = {
  bytesToViewer: Type.Number(),
  bytesFromViewer: Type.Number(),
  viewerSeconds: Type.Number(),
};
const InstanceName = Nullable(Type.String({ description: 'null when the instance has since been deleted' }));
const Report = Type.Object({
  from: Type.String({ description: 'The first UTC day (YYYY-MM-DD)' }),
  to: Type.String({ description: 'The last UTC day, inclusive' }),
  total: Type.Object(Totals),
  instances: Type.Array(Type.Object({ instanceId: Type.String(), instanceName: InstanceName, ...Totals })),
  days: Type.Array(
    Type.Object({ day: Type.String(), instanceId: Type.String(), instanceName: InstanceName, ...Totals }),
  ),
});

export function registerUsageRoutes(
  app: FastifyInstance,
  deps: { usage: UsageService; authenticate: preHandlerAsyncHookHandler },
): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  r.get(
    '/api/usage',
    {
      preHandler: deps.authenticate,
      schema: {
        summary: "The caller's usage per UTC day and instance, per instance and in total",
        description: '`to` defaults to today, `from` to 29 days before `to`; at most 366 days.',
        querystring: UsageQuery,
        errors: ['USAGE_RANGE_INVALID', 'USAGE_RANGE_TOO_LONG'],
        response: { 200: DataOf(Report, 'The usage over the range') },
      },
    },
    async (request) => data(await deps.usage.report(request.userId, request.query)),
  );
}
