// Whose Redis outage is it (issue 11)? A gateway whose Redis check fails for longer than
// REDIS_RETRY_MS used to leave the balancer: right for one node cut off from Redis (the others take its
// traffic), wrong when Redis is down for every node (all of them leave, and the balancer answers its own
// uncoded 503 for everything, the web client and the API calls that need no Redis included).
//
// So each node writes, every beat (COORDINATION_BEAT_MS, 5 s: one row update per node, never per
// request), when it last reached Redis into the shared store (store/node.repository.ts). A node whose
// own check has failed past the grace asks the store: has another live node (its row written within
// LIVE_BEATS beats) reached Redis since this node lost it, and does that peer still reach it as of its
// last write (not failing past the grace itself)? Yes → this node alone is cut off: not ready. No → the
// outage is cluster-wide: stay ready, and what needs Redis answers 503 COORDINATION_UNAVAILABLE per call.
// "Since this node lost it" is what keeps a cluster-wide outage from taking every node out for a beat:
// a peer's last success before the outage is older than this node's first failure. It compares two
// machines' clocks, so it assumes NTP-close clocks (a skew of seconds could count a peer's last success
// before the outage as one after it, for that long). A node that cannot reach the store either is not
// ready by the database check; its peers' rows are not asked for then.
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../observability/logger.js';
import type { NodeRepository } from '../store/node.repository.js';
import type { Coordinator } from './coordinator.js';

/** `local`: this node alone does not reach Redis. `cluster-wide`: no live node does. */
export type CoordinationOutage = 'local' | 'cluster-wide';

export interface CoordinationAssessment {
  /** Redis answers, or failed for less than the grace (REDIS_RETRY_MS). */
  coordination: boolean;
  /** Set once the check has failed past the grace. */
  outage: CoordinationOutage | null;
}

export interface CoordinationWatchDeps {
  coordinator: Pick<Coordinator, 'ping'>;
  /** The shared store's node rows; null: no peers to ask (every outage counts as this node's alone). */
  nodes: Pick<NodeRepository, 'recordBeat' | 'countPeers' | 'pruneBefore'> | null;
  clock: Clock;
  logger: Logger;
}

export interface CoordinationWatchOptions {
  nodeId: string;
  /** REDIS_RETRY_MS: how long requests wait a failover out, so how long a failure may last unnoticed. */
  graceMs: number;
  /** How often the node checks Redis and rewrites its row. */
  beatMs: number;
}

/** How often a node checks Redis and rewrites its row. */
export const COORDINATION_BEAT_MS = 5_000;
/** A node whose row is older than this many beats is gone (or cut off from the store). */
export const LIVE_BEATS = 3;
/** Rows of nodes not seen for this long are deleted (node ids change on restart unless NODE_ID is set). */
const PRUNE_AFTER_MS = 24 * 3600_000;
const PRUNE_EVERY_MS = 3600_000;

export class CoordinationWatch {
  private downSince: number | null = null;
  private last: CoordinationOutage | null = null;
  private timer: NodeJS.Timeout | null = null;
  private beating: Promise<void> | null = null;
  private prunedAt = -Infinity;
  private storeFailing = false;

  constructor(
    private readonly deps: CoordinationWatchDeps,
    private readonly options: CoordinationWatchOptions,
  ) {}

  /** The outage found by the last assessment (the metric), null while Redis answers or within the grace. */
  get outage(): CoordinationOutage | null {
    return this.last;
  }

  /**
   * One result of a Redis check (readiness's or the beat's). `storeUp` false: this node does not reach
   * the store either, so it is not ready anyway and the peers' rows are not read.
   */
  async assess(reached: boolean, storeUp = true): Promise<CoordinationAssessment> {
    const now = this.deps.clock.now();
    if (reached) this.downSince = null;
    else this.downSince ??= now;
    if (reached || now - (this.downSince ?? now) < this.options.graceMs) {
      this.last = null;
      return { coordination: true, outage: null };
    }
    this.last = storeUp && (await this.peersReachRedis(now)) === false ? 'cluster-wide' : 'local';
    return { coordination: false, outage: this.last };
  }

  /** Checks Redis, writes this node's row, assesses. Never throws; a beat still running is not doubled. */
  beat(): Promise<void> {
    this.beating ??= this.runBeat().finally(() => {
      this.beating = null;
    });
    return this.beating;
  }

  start(): void {
    if (this.timer) return;
    void this.beat();
    this.timer = setInterval(() => void this.beat(), this.options.beatMs);
    this.timer.unref();
  }

  /** Stops the timer and waits for a beat in progress. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.beating;
  }

  private async runBeat(): Promise<void> {
    const reached = await this.deps.coordinator.ping().then(
      () => true,
      () => false,
    );
    const now = this.deps.clock.now();
    const nodes = this.deps.nodes;
    let storeUp = nodes === null;
    if (nodes) {
      try {
        await nodes.recordBeat(this.options.nodeId, now, reached ? now : null);
        if (now - this.prunedAt >= PRUNE_EVERY_MS) {
          this.prunedAt = now;
          await nodes.pruneBefore(now - PRUNE_AFTER_MS);
        }
        storeUp = true;
        if (this.storeFailing) this.deps.logger.info('coordination watch writes its node row again');
        this.storeFailing = false;
      } catch (err) {
        if (!this.storeFailing)
          this.deps.logger.warn({ err }, 'coordination watch cannot write its node row');
        this.storeFailing = true;
      }
    }
    const before = this.last;
    const { outage } = await this.assess(reached, storeUp);
    if (outage !== before) {
      if (outage === 'cluster-wide')
        this.deps.logger.error(
          'Redis unreachable from every live gateway node: staying ready, calls that need Redis answer 503',
        );
      else if (outage === 'local')
        this.deps.logger.error('Redis unreachable from this node while peers reach it: not ready');
      else this.deps.logger.info('coordination outage over');
    }
  }

  /** True when another live node reached Redis recently; null when the store could not be asked. */
  private async peersReachRedis(now: number): Promise<boolean | null> {
    if (!this.deps.nodes) return null;
    const { beatMs, graceMs, nodeId } = this.options;
    try {
      const peers = await this.deps.nodes.countPeers(
        nodeId,
        now - LIVE_BEATS * beatMs,
        this.downSince ?? now,
        graceMs,
      );
      return peers.reachingRedis > 0;
    } catch {
      return null;
    }
  }
}
