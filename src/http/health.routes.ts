// /api/health (liveness: process facts, counts, dependency states) and /api/ready (readiness for the
// load balancer: 503 while the store does not answer, while this node alone has not reached Redis for
// longer than a failover may take (coordination/coordination-watch.ts tells it from a Redis down for
// every node, which keeps the nodes ready), or while the process drains), after the plan's §9.5.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Store } from '../store/database.js';
import type { Coordinator } from '../coordination/coordinator.js';
import type { CoordinationWatch } from '../coordination/coordination-watch.js';
import type { GatewayRole } from '../config/config.js';

export interface HealthSources {
  store: Pick<Store, 'ping' | 'dialect'>;
  coordinator: Pick<Coordinator, 'ping'>;
  coordinationKind: 'memory' | 'redis';
  /**
   * With Redis: how long its check may fail before it counts (REDIS_RETRY_MS: requests wait a failover
   * out for that long, so a blip shorter than it takes no node out of the balancer), and then whether
   * this node alone is cut off (not ready) or Redis is down for every node (ready: leaving the balancer
   * all together would help nobody).
   */
  coordinationWatch: Pick<CoordinationWatch, 'assess'>;
  nodeId: string;
  role: GatewayRole;
  isDraining: () => boolean;
  counts: () => Record<string, number>;
}

async function check(fn: () => Promise<void>): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch {
    return false;
  }
}

const State = (states: string[]) => Type.Union(states.map((s) => Type.Literal(s)));
const Health = Type.Object({
  status: State(['healthy', 'degraded', 'unhealthy']),
  timestamp: Type.String({ format: 'date-time' }),
  uptime: Type.Number({ description: 'Seconds since the process started' }),
  processId: Type.Integer(),
  nodeId: Type.String(),
  role: Type.Union(
    ['all', 'api', 'relay'].map((r) => Type.Literal(r)),
    { description: 'GATEWAY_ROLE: all, api (no viewer WebSockets) or relay (viewers only)' },
  ),
  draining: Type.Boolean(),
  memory: Type.Object({ heapUsedMb: Type.Number(), heapTotalMb: Type.Number(), rssMb: Type.Number() }),
  connections: Type.Record(Type.String(), Type.Number(), {
    description: 'websockets, sessionsWithViewers, sshConnections, sshChannels',
  }),
  dependencies: Type.Object({
    database: Type.Object({
      kind: State(['sqlite', 'postgres']),
      state: State(['connected', 'disconnected']),
    }),
    coordination: Type.Object({
      kind: State(['memory', 'redis']),
      state: State(['in-process', 'connected', 'disconnected']),
    }),
  }),
});
const Ready = Type.Object({
  ready: Type.Boolean(),
  draining: Type.Boolean(),
  checks: Type.Object({
    database: Type.Boolean(),
    coordination: Type.Optional(
      Type.Boolean({
        description: 'Redis answers, or failed for less than REDIS_RETRY_MS (absent in-process)',
      }),
    ),
  }),
  coordinationOutage: Type.Optional(
    Type.Union([Type.Literal('local'), Type.Literal('cluster-wide')], {
      description:
        'Set while Redis has failed its check past REDIS_RETRY_MS: `local` (other live nodes reach it: this one is taken out) or `cluster-wide` (no live node reaches it: staying ready, calls that need Redis answer 503 `COORDINATION_UNAVAILABLE`)',
    }),
  ),
});
const described = (schema: object, description: string) => ({
  ...schema,
  'x-response-description': description,
});

export function registerHealthRoutes(app: FastifyInstance, s: HealthSources): void {
  const healthSchema = {
    summary: 'Liveness: process facts, connection counts and dependency states (no sign-in)',
    tags: ['health'],
    response: {
      200: described(Health, '`healthy`, or `degraded` (Redis unreachable)'),
      503: described(Health, '`unhealthy`: the database does not answer'),
    },
  };
  app.get('/api/health', { schema: healthSchema }, async (_request, reply) => {
    const [database, redis] = await Promise.all([
      check(() => s.store.ping(2000)),
      s.coordinationKind === 'redis' ? check(() => s.coordinator.ping()) : Promise.resolve(null),
    ]);
    const status = !database ? 'unhealthy' : redis === false ? 'degraded' : 'healthy';
    const mem = process.memoryUsage();
    return reply.status(status === 'unhealthy' ? 503 : 200).send({
      status,
      timestamp: new Date().toISOString(),
      uptime: process.uptime(),
      processId: process.pid,
      nodeId: s.nodeId,
      role: s.role,
      draining: s.isDraining(),
      memory: {
        heapUsedMb: Math.round(mem.heapUsed / 1048576),
        heapTotalMb: Math.round(mem.heapTotal / 1048576),
        rssMb: Math.round(mem.rss / 1048576),
      },
      connections: s.counts(),
      dependencies: {
        database: { kind: s.store.dialect, state: database ? 'connected' : 'disconnected' },
        coordination: {
          kind: s.coordinationKind,
          state: redis === null ? 'in-process' : redis ? 'connected' : 'disconnected',
        },
      },
    });
  });

  const readySchema = {
    summary:
      'Readiness for the load balancer: 503 while the database does not answer, this node alone has not reached Redis for REDIS_RETRY_MS (a Redis down for every node keeps the nodes ready), or the node drains',
    tags: ['health'],
    response: {
      200: described(Ready, 'Ready for traffic'),
      503: described(Ready, 'Not ready: send traffic elsewhere'),
    },
  };
  app.get('/api/ready', { schema: readySchema }, async (_request, reply) => {
    const draining = s.isDraining();
    const [database, redis] = draining
      ? [false, null]
      : await Promise.all([
          check(() => s.store.ping(2000)),
          s.coordinationKind === 'redis' ? check(() => s.coordinator.ping()) : Promise.resolve(null),
        ]);
    const assessed = redis === null ? null : await s.coordinationWatch.assess(redis, database);
    const ready =
      !draining &&
      database &&
      (assessed === null || assessed.coordination || assessed.outage === 'cluster-wide');
    return reply.status(ready ? 200 : 503).send({
      ready,
      draining,
      checks: { database, ...(assessed === null ? {} : { coordination: assessed.coordination }) },
      ...(assessed?.outage ? { coordinationOutage: assessed.outage } : {}),
    });
  });
}
