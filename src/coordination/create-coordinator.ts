// Chooses the coordination implementation from config: Redis when REDIS_URL, REDIS_SENTINELS or
// REDIS_CLUSTER_NODES is set (a cluster of gateways), in-process otherwise (a single node). The only
// place that branches on the mode.
import type { Config } from '../config/config.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../observability/logger.js';
import type { Coordinator } from './coordinator.js';
import { MemoryCoordinator } from './memory-coordinator.js';
import { RedisCoordinator } from './redis-coordinator.js';

export interface CoordinatorDeps {
  clock: Clock;
  logger: Logger;
}

export function createCoordinator(
  config: Pick<Config, 'redis' | 'redisRetryMs'>,
  deps: CoordinatorDeps,
): Coordinator {
  if (config.redis === null) return new MemoryCoordinator(deps.clock);
  return new RedisCoordinator({
    connection: config.redis,
    retryBudgetMs: config.redisRetryMs,
    clock: deps.clock,
    logger: deps.logger.child({ component: 'coordination' }),
  });
}
