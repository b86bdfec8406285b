// The gateway nodes' rows (issue 11): each node rewrites its own every few seconds with when it last
// reached Redis, so a node whose Redis check fails can ask whether its live peers reach Redis (it alone
// is cut off) or not (Redis is down for everyone). One small table, one row per NODE_ID.
import type { Kysely } from 'kysely';
import type { StoreAccess } from './database.js';
import type { Database } from './schema.js';
import type { StoreRetry } from './store-retry.js';

export class NodeRepository {
  private readonly db: Kysely<Database>;
  private readonly retry: StoreRetry;

  constructor(store: StoreAccess) {
    this.db = store.db;
    this.retry = store.retry;
  }

  /**
   * Writes this node's row: seen now, and reached Redis at `redisReachedAt` (null: not this time, the
   * last success stays). Several worker processes of one node share the row; the latest success wins.
   */
  async recordBeat(nodeId: string, seenAt: number, redisReachedAt: number | null): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db
        .insertInto('gateway_nodes')
        .values({ node_id: nodeId, seen_at: seenAt, redis_reached_at: redisReachedAt })
        .onConflict((oc) =>
          oc.column('node_id').doUpdateSet((eb) => ({
            seen_at: eb.ref('excluded.seen_at'),
            redis_reached_at: eb.fn.coalesce('excluded.redis_reached_at', 'gateway_nodes.redis_reached_at'),
          })),
        )
        .execute(),
    );
  }

  /**
   * Other nodes whose row was written at or after `seenSince` (alive, and reaching the store), and how
   * many of them reach Redis as of their last write: reached it after `reachedAfter`, and at most
   * `graceMs` before that write (a peer whose own check fails past the grace does not count).
   */
  async countPeers(
    nodeId: string,
    seenSince: number,
    reachedAfter: number,
    graceMs: number,
  ): Promise<{ live: number; reachingRedis: number }> {
    const rows = await this.retry.run('read', () =>
      this.db
        .selectFrom('gateway_nodes')
        .select(['seen_at', 'redis_reached_at'])
        .where('node_id', '<>', nodeId)
        .where('seen_at', '>=', seenSince)
        .execute(),
    );
    return {
      live: rows.length,
      reachingRedis: rows.filter(
        (r) =>
          r.redis_reached_at !== null &&
          r.redis_reached_at > reachedAfter &&
          r.redis_reached_at >= r.seen_at - graceMs,
      ).length,
    };
  }

  /** Forgets nodes not seen since `before` (a restarted node has a new id unless NODE_ID is set). */
  async pruneBefore(before: number): Promise<number> {
    const result = await this.retry.run('idempotent', () =>
      this.db.deleteFrom('gateway_nodes').where('seen_at', '<', before).executeTakeFirst(),
    );
    return Number(result.numDeletedRows);
  }
}
