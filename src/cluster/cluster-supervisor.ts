// `clouddesk start --workers N`: a node:cluster primary that forks N gateway workers (one per core by
// default), all sharing the listening port, restarts a worker that dies (bounded: a crash loop stops
// the whole thing rather than spinning), and on SIGTERM/SIGINT forwards SIGTERM to every worker so each
// drains (its own ordered shutdown) — SIGKILL for whoever is still running at the deadline.
//
// Any worker serves any viewer (no stickiness, no tunnel ports; see DESIGN.md), so node:cluster's
// round-robin distribution is all the balancing a host needs. Optionally the primary serves every
// worker's metrics on METRICS_PORT (prom-client AggregatorRegistry; see observability/metrics.ts).
import cluster, { type ClusterSettings, type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { Logger } from '../observability/logger.js';
import { clusterMetricsEndpoint, startMetricsServer, type MetricsServer } from '../observability/metrics.js';
import { markSupervisedWorker } from './worker-role.js';

export interface ClusterOptions {
  /** Worker processes; 0 = one per core (os.availableParallelism()). */
  workers: number;
  /** Runs in each worker: build the gateway and listen. It handles its own SIGTERM drain. */
  startWorker: () => Promise<void>;
  logger: Logger;
  /**
   * A worker's drain deadline (SHUTDOWN_TIMEOUT_MS, which holds its SHUTDOWN_READY_GRACE_MS: config
   * refuses a grace that does not fit); the primary SIGKILLs a worker still alive this long + 2 s after
   * SIGTERM.
   */
  shutdownTimeoutMs: number;
  /** A crash loop is `maxRestarts` restarts within `restartWindowMs`. Default 10 in 60 s. */
  maxRestarts?: number;
  restartWindowMs?: number;
  /** Serve all workers' metrics from the primary (METRICS_PORT). */
  metrics?: { host: string; port: number; token: string | null } | null;
  /** Install SIGTERM/SIGINT handlers in the primary. Default true (tests drive `shutdown()` instead). */
  handleSignals?: boolean;
  /** Passed to cluster.setupPrimary (tests point `exec` at a fixture). */
  setup?: ClusterSettings;
  /** Extra environment for workers. */
  env?: Record<string, string>;
}

export interface ClusterPrimary {
  /** Resolves once every worker forked so far has started (its startWorker resolved). */
  ready(): Promise<void>;
  workerPids(): number[];
  /** Workers restarted after dying unexpectedly. */
  restarts(): number;
  metricsPort(): number | null;
  /** Drains every worker (SIGTERM, then SIGKILL at the deadline); resolves with the exit code for the process. */
  shutdown(reason: string): Promise<number>;
  /** Resolves with the process exit code when the cluster has stopped (shutdown or crash loop). */
  readonly exited: Promise<number>;
}

const READY_MESSAGE = 'clouddesk:worker-ready';
/** Past the worker's own deadline, so a worker's force-exit timer normally wins over our SIGKILL. */
const KILL_GRACE_MS = 2_000;

function isReadyMessage(m: unknown): boolean {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === READY_MESSAGE;
}

/**
 * In the primary: forks and supervises workers, returns a handle. In a worker: runs `startWorker`
 * and returns null (a worker that cannot start exits non-zero, which the primary counts as a crash).
 */
export async function runCluster(options: ClusterOptions): Promise<ClusterPrimary | null> {
  if (cluster.isWorker) {
    await runWorker(options);
    return null;
  }
  return startPrimary(options);
}

async function runWorker(options: ClusterOptions): Promise<void> {
  markSupervisedWorker();
  const log = options.logger.child({ worker: cluster.worker?.id });
  // The primary died (or was SIGKILLed): drain and go rather than serve on as an orphan.
  process.once('disconnect', () => {
    log.warn('cluster primary went away; shutting this worker down');
    process.kill(process.pid, 'SIGTERM');
  });
  try {
    await options.startWorker();
  } catch (err) {
    log.fatal({ err }, 'worker failed to start');
    // The one place a worker exits on its own: it has nothing to drain yet.
    process.exit(1);
  }
  process.send?.({ type: READY_MESSAGE });
}

async function startPrimary(options: ClusterOptions): Promise<ClusterPrimary> {
  const log = options.logger.child({ role: 'primary' });
  const count = options.workers > 0 ? options.workers : availableParallelism();
  const maxRestarts = options.maxRestarts ?? 10;
  const restartWindowMs = options.restartWindowMs ?? 60_000;
  if (options.setup) cluster.setupPrimary(options.setup);

  const workers = new Map<number, { worker: Worker; ready: boolean }>();
  const readyWaiters: (() => void)[] = [];
  const restartTimes: number[] = [];
  let restarts = 0;
  let stopping = false;
  let metricsServer: MetricsServer | null = null;
  let resolveExited!: (code: number) => void;
  const exited = new Promise<number>((resolve) => (resolveExited = resolve));
  let exitCode = 0;

  const allReady = () => [...workers.values()].every((w) => w.ready);
  const checkReady = () => {
    if (workers.size > 0 && allReady()) for (const w of readyWaiters.splice(0)) w();
  };

  const fork = (): void => {
    const worker = cluster.fork(options.env);
    workers.set(worker.id, { worker, ready: false });
    worker.on('message', (m: unknown) => {
      if (!isReadyMessage(m)) return;
      const entry = workers.get(worker.id);
      if (entry) entry.ready = true;
      log.info({ worker: worker.id, pid: worker.process.pid }, 'worker ready');
      checkReady();
    });
    worker.on('exit', (code, signal) => onExit(worker, code, signal));
    // An IPC error (the worker vanished mid-send) must not crash the primary.
    worker.on('error', (err) => log.warn({ err, worker: worker.id }, 'worker channel error'));
  };

  const finish = async (): Promise<void> => {
    if (workers.size > 0) return;
    if (metricsServer) await metricsServer.close();
    metricsServer = null;
    removeSignalHandlers();
    resolveExited(exitCode);
  };

  const onExit = (worker: Worker, code: number | null, signal: string | null): void => {
    workers.delete(worker.id);
    if (stopping) {
      log.info({ worker: worker.id, code, signal }, 'worker stopped');
      void finish();
      return;
    }
    const now = Date.now();
    restartTimes.push(now);
    while (restartTimes.length > 0 && restartTimes[0]! <= now - restartWindowMs) restartTimes.shift();
    if (restartTimes.length > maxRestarts) {
      log.fatal(
        { worker: worker.id, code, signal, restarts: restartTimes.length, windowMs: restartWindowMs },
        'workers keep dying; stopping the cluster',
      );
      exitCode = 1;
      void shutdown('crash loop');
      return;
    }
    // Back off a little on repeated deaths so a failing dependency is not hammered.
    const delay = Math.min(100 * 2 ** (restartTimes.length - 1), 5_000);
    log.error({ worker: worker.id, code, signal, restartInMs: delay }, 'worker died; restarting');
    restarts++;
    setTimeout(() => {
      if (!stopping) fork();
    }, delay);
  };

  let shutdownPromise: Promise<number> | null = null;
  const shutdown = (reason: string): Promise<number> => {
    if (shutdownPromise) return shutdownPromise;
    stopping = true;
    log.info({ reason, workers: workers.size }, 'draining workers');
    for (const { worker } of workers.values()) {
      try {
        worker.process.kill('SIGTERM');
      } catch {
        // already gone; its exit event finishes the bookkeeping
      }
    }
    const killTimer = setTimeout(() => {
      for (const { worker } of workers.values()) {
        log.warn({ worker: worker.id }, 'worker did not drain in time; killing it');
        exitCode = exitCode || 1;
        worker.process.kill('SIGKILL');
      }
    }, options.shutdownTimeoutMs + KILL_GRACE_MS);
    shutdownPromise = exited.finally(() => clearTimeout(killTimer));
    void finish();
    return shutdownPromise;
  };

  const onSignal = (signal: NodeJS.Signals) => {
    void shutdown(signal);
  };
  const removeSignalHandlers = () => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
  if (options.handleSignals !== false) {
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }

  if (options.metrics) {
    metricsServer = await startMetricsServer(
      clusterMetricsEndpoint(options.metrics.token),
      options.metrics,
      (err) => log.warn({ err }, 'collecting worker metrics failed'),
    );
    log.info({ port: metricsServer.port }, 'serving all workers’ metrics');
  }

  log.info({ workers: count }, 'starting workers');
  for (let i = 0; i < count; i++) fork();

  return {
    ready: () =>
      new Promise<void>((resolve) => {
        readyWaiters.push(resolve);
        checkReady();
      }),
    workerPids: () => [...workers.values()].map((w) => w.worker.process.pid ?? 0).filter((p) => p > 0),
    restarts: () => restarts,
    metricsPort: () => metricsServer?.port ?? null,
    shutdown,
    exited,
  };
}
