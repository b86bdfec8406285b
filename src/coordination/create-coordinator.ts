// Chooses the coordination implementation from config: Redis when REDIS_URL is set (a cluster),
// in-process otherwise (a single node). The only place that branches on the mode.
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

export function createCoordinator(config: Pick<Config, 'redisUrl'>, deps: CoordinatorDeps): Coordinator {
  if (config.redisUrl === null) return new MemoryCoordinator(deps.clock);
  return new RedisCoordinator({
    url: config.redisUrl,
    clock: deps.clock,
    logger: deps.logger.child({ component: 'coordination' }),
  });
}
