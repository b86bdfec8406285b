// /api/health (liveness: process facts, counts, dependency states) and /api/ready (readiness for the
// load balancer: 503 while the store does not answer, while Redis has not answered for longer than a
// failover may take, or while the process drains), after the plan's §9.5.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Store } from '../store/database.js';
import type { Coordinator } from '../coordination/coordinator.js';

export interface HealthSources {
  store: Pick<Store, 'ping' | 'dialect'>;
  coordinator: Pick<Coordinator, 'ping'>;
  coordinationKind: 'memory' | 'redis';
  nodeId: string;
  isDraining: () => boolean;
  counts: () => Record<string, number>;
  /**
   * How long Redis may fail its check before the node reports not ready (REDIS_RETRY_MS): requests
   * wait a failover out for that long, so a blip shorter than it takes no node out of the balancer (all
   * of them would go at once), while a node cut off from Redis (a partition) is taken out.
   */
  coordinationGraceMs: number;
  clock?: () => number;
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
      'Readiness for the load balancer: 503 while the database does not answer, Redis has not answered for REDIS_RETRY_MS, or the node drains',
    tags: ['health'],
    response: {
      200: described(Ready, 'Ready for traffic'),
      503: described(Ready, 'Not ready: send traffic elsewhere'),
    },
  };
  const now = s.clock ?? Date.now;
  let coordinationDownSince: number | null = null;
  app.get('/api/ready', { schema: readySchema }, async (_request, reply) => {
    const draining = s.isDraining();
    const [database, redis] = draining
      ? [false, null]
      : await Promise.all([
          check(() => s.store.ping(2000)),
          s.coordinationKind === 'redis' ? check(() => s.coordinator.ping()) : Promise.resolve(null),
        ]);
    if (redis === true) coordinationDownSince = null;
    else if (redis === false) coordinationDownSince ??= now();
    const coordination =
      redis === null ? null : redis || now() - (coordinationDownSince ?? now()) < s.coordinationGraceMs;
    const ready = !draining && database && coordination !== false;
    return reply
      .status(ready ? 200 : 503)
      .send({ ready, draining, checks: { database, ...(coordination === null ? {} : { coordination }) } });
  });
}
