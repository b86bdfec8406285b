// Test fixture: two gateways in this process (nodes gw-a and gw-b, each with its own Redis connection
// under one per-file key prefix, on one throwaway PostgreSQL database) before one real sshd with a test
// user, which is what a round-robin balancer puts in front of a client. `stop()` ends the gateways, then
// the sshd (and the desktops its logins left), then drops the database.
import { randomBytes } from 'node:crypto';
import { systemClock } from '../../src/lib/clock.js';
import { createLogger } from '../../src/observability/logger.js';
import { RedisCoordinator } from '../../src/coordination/redis-coordinator.js';
import { listenTestGateway, type TestGateway } from './builders.js';
import { createTestDatabase } from './postgres-database.js';
import { startSshd, type SshdFixture } from './sshd.js';

export const REDIS_URL = 'redis://127.0.0.1:6379';

export type ListeningGateway = TestGateway & { base: string };

export interface TwoGateways {
  sshd: SshdFixture;
  db: { url: string; drop(): Promise<void> };
  gateways: ListeningGateway[];
  a: ListeningGateway;
  b: ListeningGateway;
  stop(): Promise<void>;
}

/**
 * `name` goes into the Redis key prefix; `env` is added to both gateways' DATABASE_URL, REDIS_URL, NODE_ID
 * and REGISTRATION=open, and `perNode[i]` to gateway i's alone.
 */
export async function startTwoGateways(
  name: string,
  env: Record<string, string> = {},
  perNode: [Record<string, string>, Record<string, string>] = [{}, {}],
): Promise<TwoGateways> {
  const prefix = `cd-test-${name}-${randomBytes(4).toString('hex')}:`;
  const [sshd, db] = await Promise.all([startSshd({ users: 1 }), createTestDatabase()]);
  const gateways: ListeningGateway[] = [];
  const stop = async () => {
    for (const g of gateways) await g.cleanup();
    await sshd.stop();
    await db.drop();
  };
  try {
    for (const [i, node] of (['gw-a', 'gw-b'] as const).entries()) {
      const coordinator = new RedisCoordinator({
        url: REDIS_URL,
        clock: systemClock,
        logger: createLogger({ level: 'silent' }),
        keyPrefix: prefix,
      });
      gateways.push(
        await listenTestGateway(
          { DATABASE_URL: db.url, REDIS_URL, NODE_ID: node, REGISTRATION: 'open', ...env, ...perNode[i] },
          { coordinator },
        ),
      );
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { sshd, db, gateways, a: gateways[0]!, b: gateways[1]!, stop };
}
