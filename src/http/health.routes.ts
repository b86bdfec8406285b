// /api/health (liveness: process facts, counts, dependency states) and /api/ready (readiness for the
// load balancer: 503 while the store does not answer or the process drains), after the plan's §9.5.
import type { FastifyInstance } from 'fastify';
import type { Store } from '../store/database.js';
import type { Coordinator } from '../coordination/coordinator.js';

export interface HealthSources {
  store: Pick<Store, 'ping' | 'dialect'>;
  coordinator: Pick<Coordinator, 'ping'>;
  coordinationKind: 'memory' | 'redis';
  nodeId: string;
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

export function registerHealthRoutes(app: FastifyInstance, s: HealthSources): void {
  app.get('/api/health', async (_request, reply) => {
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

  app.get('/api/ready', async (_request, reply) => {
    const draining = s.isDraining();
    const database = draining ? false : await check(() => s.store.ping(2000));
    const ready = !draining && database;
    return reply.status(ready ? 200 : 503).send({ ready, draining, checks: { database } });
  });
}
