// Prometheus metrics (plan section 6.3, as metric names rather than CloudWatch calls): one `Metrics`
// per app with its own Registry (not prom-client's global one, so tests can build several apps),
// default process metrics (heap, RSS, CPU, fds, GC), and the gateway's own gauges, counters and
// histograms, all labelled with `worker` and `node`. Alert rules over these names: deploy/alerts.yml.
//
// Hot path: the relay never calls into prom-client per chunk. It counts bytes in plain numbers and
// the gauges/counters below read those numbers through `MetricsSources` when Prometheus scrapes.
//
// Serving: `/metrics` on the app behind `Authorization: Bearer $METRICS_TOKEN`, or a separate listener
// on METRICS_PORT (startMetricsServer). Neither configured → not served at all, rather than open to
// whoever reaches the public port. Under `--workers N` (node:cluster) each worker's registry answers
// the primary's requests (AggregatorRegistry) and the primary serves them all on METRICS_PORT.
import cluster from 'node:cluster';
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { FastifyInstance } from 'fastify';
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { isSupervisedWorker } from '../cluster/worker-role.js';

/** Live numbers the metrics read on each scrape. Byte totals only ever grow (closed relays included). */
export interface MetricsSources {
  /** Sessions not ended in the whole cluster (e.g. a store count): the capacity alert compares max() with 900. */
  activeSessions?(): number | Promise<number>;
  /** Viewer WebSockets open on this process. */
  liveViewers?(): number;
  sshConnections?(): number;
  sshChannels?(): number;
  relayBytes?(): { toViewer: number; fromViewer: number };
  /** Times a viewer's budget (SESSION_MAX_KBPS) paused its channel, closed relays included. */
  relayBudgetPauses?(): number;
  /** Connects waiting in this process's desktop start queue. */
  desktopStartQueue?(): number;
  /** Desktop starts running in this process. */
  desktopStartsInFlight?(): number;
  /** Background desktop stops queued or running in this process. */
  desktopStopsPending?(): number;
  /** With Redis: the outage its last check found (coordination/coordination-watch.ts), null for none. */
  coordinationOutage?(): 'local' | 'cluster-wide' | null;
}

export interface MetricsOptions {
  /** Worker label: the node:cluster worker id, '0' for a single process. */
  worker: string;
  /** Node label: the gateway's node id (config.cluster.nodeId). */
  node: string;
  /**
   * What this process's event loop serves, the `role` label of the loop metrics: `gateway` (HTTP, the
   * API and the relay on one loop, the default).
   */
  role?: string;
  sources?: MetricsSources;
  /** Default process metrics (heap, RSS, CPU, event loop); on unless turned off. */
  processMetrics?: boolean;
  /** Event-loop delays sampled every LOOP_DELAY_RESOLUTION_MS; default a `monitorEventLoopDelay` of our own. */
  loopDelay?: LoopDelayHistogram;
}

/** What the lag gauge reads of node's `IntervalHistogram` (values in nanoseconds). */
export type LoopDelayHistogram = Pick<
  IntervalHistogram,
  'count' | 'max' | 'percentile' | 'reset' | 'enable' | 'disable'
>;

/** How often `monitorEventLoopDelay` samples, in ms. */
export const LOOP_DELAY_RESOLUTION_MS = 10;

/**
 * Seconds of event-loop lag in one `monitorEventLoopDelay` value. Each sample is the time between two
 * ticks of a timer set to the resolution, so it includes the resolution itself (an idle loop reads
 * ~10.1 ms at a 10 ms resolution): the lag is what lies beyond it, never below 0.
 */
export function lagBeyondResolution(delayNs: number, resolutionMs = LOOP_DELAY_RESOLUTION_MS): number {
  return Math.max(0, delayNs - resolutionMs * 1e6) / 1e9;
}

export type SetupOutcome = 'ok' | 'error';
export type ViewerConnectKind = 'first' | 'reconnect';

const SETUP_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60];
const RTT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
// From an idle desktop (~0.3 kbit/s) through typing (~6) to bursts of tens of Mbit/s (issue 13's table).
const VIEWER_KBPS_BUCKETS = [1, 10, 50, 100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000];

export class Metrics {
  readonly registry = new Registry();
  private sources: MetricsSources;
  private readonly loopDelay: LoopDelayHistogram;
  private readonly setupDuration: Histogram<'outcome'>;
  private readonly viewerRtt: Histogram;
  private readonly rateLimitRejections: Counter<'limit'>;
  private readonly errors: Counter<'code'>;
  private readonly wsCloses: Counter<'code'>;
  private readonly viewerConnects: Counter<'kind'>;
  private readonly storeRetries: Counter<'failure'>;
  private readonly bufferDrops: Counter<'buffer' | 'reason'>;
  private readonly httpDuration: Histogram<'method' | 'route' | 'status'>;
  private readonly viewerBandwidth: Histogram;
  private readonly startRejections: Counter<'reason'>;
  private readonly desktopStops: Counter<'outcome'>;
  private readonly longTaskCount: Counter<'role' | 'kind'>;
  private readonly longTaskSeconds: Counter<'role' | 'kind'>;
  readonly role: string;

  constructor(options: MetricsOptions) {
    this.sources = options.sources ?? {};
    const register = [this.registry];
    this.registry.setDefaultLabels({ worker: options.worker, node: options.node });
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry });

    // Byte totals: counters advanced on scrape by what the relays counted since the last one.
    const seenBytes = { toViewer: 0, fromViewer: 0 };
    const readSources = () => this.sources;
    new Counter({
      name: 'clouddesk_relay_bytes_total',
      help: 'Bytes relayed between viewers and desktops',
      labelNames: ['direction'] as const,
      registers: register,
      collect() {
        const totals = readSources().relayBytes?.();
        if (!totals) return;
        for (const [key, label] of [
          ['toViewer', 'to_viewer'],
          ['fromViewer', 'from_viewer'],
        ] as const) {
          const delta = totals[key] - seenBytes[key];
          if (delta > 0) this.inc({ direction: label }, delta);
          seenBytes[key] = totals[key];
        }
      },
    });

    let seenPauses = 0;
    new Counter({
      name: 'clouddesk_relay_budget_pauses_total',
      help: "Times a viewer's downstream budget (SESSION_MAX_KBPS) paused its SSH channel",
      registers: register,
      collect() {
        const total = readSources().relayBudgetPauses?.();
        if (total === undefined) return;
        if (total > seenPauses) this.inc(total - seenPauses);
        seenPauses = total;
      },
    });

    const gaugeFromSource = (
      name: string,
      help: string,
      read: (s: MetricsSources) => number | Promise<number> | undefined,
    ) =>
      new Gauge({
        name,
        help,
        registers: register,
        async collect() {
          const v = await read(readSources());
          if (v !== undefined) this.set(v);
        },
      });
    gaugeFromSource(
      'clouddesk_sessions_active',
      'Sessions not ended, cluster-wide (every process reports the same number: aggregate with max)',
      (s) => s.activeSessions?.(),
    );
    gaugeFromSource('clouddesk_viewers_live', 'Viewer WebSockets open on this process', (s) =>
      s.liveViewers?.(),
    );
    gaugeFromSource('clouddesk_ssh_connections', 'Pooled SSH connections open', (s) => s.sshConnections?.());
    gaugeFromSource('clouddesk_ssh_channels', 'SSH channels open (one per viewer)', (s) => s.sshChannels?.());
    gaugeFromSource(
      'clouddesk_desktop_start_queue_depth',
      'Connects waiting for a desktop start slot in this process (DESKTOP_START_QUEUE bounds it)',
      (s) => s.desktopStartQueue?.(),
    );
    gaugeFromSource(
      'clouddesk_desktop_starts_in_flight',
      'Desktop starts running in this process (DESKTOP_STARTS_IN_FLIGHT bounds it)',
      (s) => s.desktopStartsInFlight?.(),
    );
    gaugeFromSource(
      'clouddesk_desktop_stops_pending',
      'Background desktop stops queued or running in this process',
      (s) => s.desktopStopsPending?.(),
    );

    // 1 for the scope of the Redis outage this node sees (past REDIS_RETRY_MS), 0 for the other; both 0
    // while Redis answers. Absent in-process. `cluster-wide` on every node is the page: Redis is down.
    new Gauge({
      name: 'clouddesk_coordination_outage',
      help: 'Redis unreachable past REDIS_RETRY_MS, by scope: local (this node alone, taken out of the balancer) or cluster-wide (no live node reaches it; nodes stay ready, calls needing Redis answer 503)',
      labelNames: ['scope'] as const,
      registers: register,
      collect() {
        const sources = readSources();
        if (!sources.coordinationOutage) return;
        const outage = sources.coordinationOutage();
        for (const scope of ['local', 'cluster-wide'] as const) this.set({ scope }, outage === scope ? 1 : 0);
      },
    });

    // Event-loop lag over the last scrape interval (reset after each scrape), in seconds. Two names for
    // one reading: `clouddesk_event_loop_lag_seconds{stat}` (the alert rules' and the bench's) and
    // `clouddesk_event_loop_delay_seconds{role,stat}`, which says whose loop it is (issue 9: the relay's
    // own delay is the target). One scrape reads the histogram once: prom-client collects in
    // registration order, so the delay gauge takes the snapshot and resets, the lag gauge reuses it.
    this.role = options.role ?? 'gateway';
    const role = this.role;
    this.loopDelay = options.loopDelay ?? monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
    this.loopDelay.enable();
    const loop = this.loopDelay;
    let snapshot: { p50: number; p99: number; max: number } | null = null;
    new Gauge({
      name: 'clouddesk_event_loop_delay_seconds',
      help: `Event-loop delay of this process's loop since the previous scrape, beyond the monitor's ${LOOP_DELAY_RESOLUTION_MS} ms sampling interval, by the role the loop serves`,
      labelNames: ['role', 'stat'] as const,
      registers: register,
      collect() {
        snapshot =
          loop.count > 0
            ? {
                p50: lagBeyondResolution(loop.percentile(50)),
                p99: lagBeyondResolution(loop.percentile(99)),
                max: lagBeyondResolution(loop.max),
              }
            : null;
        loop.reset();
        if (snapshot === null) return;
        for (const stat of ['p50', 'p99', 'max'] as const) this.set({ role, stat }, snapshot[stat]);
      },
    });
    new Gauge({
      name: 'clouddesk_event_loop_lag_seconds',
      help: `Event-loop delay since the previous scrape, beyond the monitor's ${LOOP_DELAY_RESOLUTION_MS} ms sampling interval (an idle loop reads ~0)`,
      labelNames: ['stat'] as const,
      registers: register,
      collect() {
        if (snapshot === null) return;
        for (const stat of ['p50', 'p99', 'max'] as const) this.set({ stat }, snapshot[stat]);
      },
    });
    // Filled only while the long-task attribution runs (LOOP_LONG_TASK_MS; observability/long-tasks.ts).
    this.longTaskCount = new Counter({
      name: 'clouddesk_event_loop_long_tasks_total',
      help: 'Stretches in which the event loop ran without a break for longer than LOOP_LONG_TASK_MS, by what they spent most time in',
      labelNames: ['role', 'kind'] as const,
      registers: register,
    });
    this.longTaskSeconds = new Counter({
      name: 'clouddesk_event_loop_long_task_seconds_total',
      help: 'Time the event loop spent in those long tasks, by what they spent most time in',
      labelNames: ['role', 'kind'] as const,
      registers: register,
    });

    this.setupDuration = new Histogram({
      name: 'clouddesk_session_setup_duration_seconds',
      help: 'From connect request to a desktop ready to stream',
      labelNames: ['outcome'] as const,
      buckets: SETUP_BUCKETS,
      registers: register,
    });
    this.viewerRtt = new Histogram({
      name: 'clouddesk_viewer_rtt_seconds',
      help: 'WebSocket ping → pong round trip to viewers',
      buckets: RTT_BUCKETS,
      registers: register,
    });
    this.rateLimitRejections = new Counter({
      name: 'clouddesk_rate_limit_rejections_total',
      help: 'Requests refused by a rate limit or lockout',
      labelNames: ['limit'] as const,
      registers: register,
    });
    this.errors = new Counter({
      name: 'clouddesk_errors_total',
      help: 'Errors answered, by catalogue code',
      labelNames: ['code'] as const,
      registers: register,
    });
    this.wsCloses = new Counter({
      name: 'clouddesk_ws_closes_total',
      help: 'Viewer WebSockets closed, by close code',
      labelNames: ['code'] as const,
      registers: register,
    });
    this.viewerConnects = new Counter({
      name: 'clouddesk_viewer_connects_total',
      help: 'Viewer WebSockets accepted; reconnect = to a session that had a viewer before',
      labelNames: ['kind'] as const,
      registers: register,
    });
    this.storeRetries = new Counter({
      name: 'clouddesk_store_retries_total',
      help: 'Database statements retried across an outage or failover (unsent = never ran; in-doubt = connection lost mid-statement)',
      labelNames: ['failure'] as const,
      registers: register,
    });
    this.bufferDrops = new Counter({
      name: 'clouddesk_buffer_dropped_total',
      help: 'Write-behind entries dropped: overflow (memory bound hit during a long outage) or refused (the store refused the batch repeatedly)',
      labelNames: ['buffer', 'reason'] as const,
      registers: register,
    });
    this.httpDuration = new Histogram({
      name: 'clouddesk_http_request_duration_seconds',
      help: 'HTTP requests by route template and status',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: HTTP_BUCKETS,
      registers: register,
    });

    // One observation per viewer per activity flush (and one when it leaves): how many viewers stream at
    // what rate, without a label per session.
    this.viewerBandwidth = new Histogram({
      name: 'clouddesk_viewer_bandwidth_kbps',
      help: 'Desktop-to-viewer rate of each viewer over each activity flush interval, in kbit/s',
      buckets: VIEWER_KBPS_BUCKETS,
      registers: register,
    });

    this.startRejections = new Counter({
      name: 'clouddesk_desktop_start_rejected_total',
      help: 'Connects answered 503 OVERLOADED instead of a desktop: queue_full, expected_wait, queue_timeout, client_gone, answer_deadline (the bound came first; a start already running goes on)',
      labelNames: ['reason'] as const,
      registers: register,
    });
    this.desktopStops = new Counter({
      name: 'clouddesk_desktop_stops_total',
      help: 'Background desktop stop tries: stopped, retry (failed, tried again later), gave_up, instance_deleted (its delete ran the stop)',
      labelNames: ['outcome'] as const,
      registers: register,
    });

    // In a worker of our supervisor, answer the primary's aggregation requests from this registry.
    if (cluster.isWorker && isSupervisedWorker()) {
      AggregatorRegistry.setRegistries([this.registry]);
      new AggregatorRegistry();
    }
  }

  /** Connects the live numbers (the app calls this once its services exist). */
  setSources(sources: MetricsSources): void {
    this.sources = sources;
  }

  sessionSetup(durationMs: number, outcome: SetupOutcome): void {
    this.setupDuration.observe({ outcome }, durationMs / 1000);
  }

  viewerRttMs(ms: number): void {
    this.viewerRtt.observe(ms / 1000);
  }

  viewerKbps(kbps: number): void {
    this.viewerBandwidth.observe(kbps);
  }

  desktopStartRejected(reason: string): void {
    this.startRejections.inc({ reason });
  }

  desktopStop(outcome: string): void {
    this.desktopStops.inc({ outcome });
  }

  /** Long tasks found in one profiled window (observability/long-tasks.ts). */
  longTasks(tasks: readonly { kind: string; ms: number }[]): void {
    for (const t of tasks) {
      this.longTaskCount.inc({ role: this.role, kind: t.kind });
      this.longTaskSeconds.inc({ role: this.role, kind: t.kind }, t.ms / 1000);
    }
  }

  rateLimited(limit: string): void {
    this.rateLimitRejections.inc({ limit });
  }

  error(code: string): void {
    this.errors.inc({ code });
  }

  storeRetried(failure: string): void {
    this.storeRetries.inc({ failure });
  }

  bufferDropped(buffer: string, reason: string, count: number): void {
    this.bufferDrops.inc({ buffer, reason }, count);
  }

  wsClosed(code: number): void {
    this.wsCloses.inc({ code: String(code) });
  }

  viewerConnected(kind: ViewerConnectKind): void {
    this.viewerConnects.inc({ kind });
  }

  httpRequest(method: string, route: string, status: number, durationMs: number): void {
    this.httpDuration.observe({ method, route, status: String(status) }, durationMs / 1000);
  }

  /** Prometheus text of this process. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  close(): void {
    this.loopDelay.disable();
    this.registry.clear();
  }
}

/** Constant-time token check (hashing first makes the lengths equal). */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  if (!m) return false;
  const a = createHash('sha256').update(m[1]!).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

/**
 * Times every HTTP request by route template (never the raw URL: ids would explode the label set).
 * Unmatched routes are one label, `unmatched`.
 */
export function registerHttpMetrics(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onResponse', (request, reply, done) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.httpRequest(request.method, route, reply.statusCode, reply.elapsedTime);
    done();
  });
}

export interface MetricsEndpoint {
  /** Prometheus text to answer with. */
  render(): Promise<string>;
  contentType: string;
  /** Required Bearer token; null = no token (only sensible on a separate, private port). */
  token: string | null;
}

/** `GET /metrics` on the app, behind the Bearer token (a token is required on the public port). */
export function registerMetricsRoute(
  app: FastifyInstance,
  endpoint: MetricsEndpoint & { token: string },
): void {
  // Logged at debug like the other probes (http/request-logging.ts).
  app.get('/metrics', async (request, reply) => {
    if (!bearerMatches(request.headers.authorization, endpoint.token)) {
      return reply
        .status(401)
        .header('WWW-Authenticate', 'Bearer')
        .send({ error: { code: 'UNAUTHENTICATED', message: 'Metrics need the metrics token' } });
    }
    const body = await endpoint.render();
    return reply.header('Content-Type', endpoint.contentType).header('Cache-Control', 'no-store').send(body);
  });
}

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/** A separate listener that only serves `/metrics` (METRICS_PORT), optionally behind the token too. */
export async function startMetricsServer(
  endpoint: MetricsEndpoint,
  listen: { host: string; port: number },
  onError?: (err: unknown) => void,
): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
      return;
    }
    if (endpoint.token !== null && !bearerMatches(req.headers.authorization, endpoint.token)) {
      res
        .writeHead(401, { 'WWW-Authenticate': 'Bearer', 'Content-Type': 'text/plain' })
        .end('unauthorized\n');
      return;
    }
    endpoint.render().then(
      (body) =>
        res.writeHead(200, { 'Content-Type': endpoint.contentType, 'Cache-Control': 'no-store' }).end(body),
      (err: unknown) => {
        onError?.(err);
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end('metrics unavailable\n');
      },
    );
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listen.host, port: listen.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? address.port : listen.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** For the node:cluster primary: every worker's metrics, aggregated (each series keeps its worker label). */
export function clusterMetricsEndpoint(token: string | null): MetricsEndpoint {
  const aggregator = new AggregatorRegistry();
  return { render: () => aggregator.clusterMetrics(), contentType: aggregator.contentType, token };
}

/**
 * Where this process serves its metrics, from config.metrics: the token route on the app when
 * METRICS_TOKEN is set, and a separate listener when METRICS_PORT is set. In a worker of our own
 * `--workers N` supervisor neither: a scrape would reach a random worker, so the primary serves all
 * of them on METRICS_PORT (runCluster's `metrics` option). PM2 cluster-mode instances are node:cluster
 * workers too, but nobody aggregates for them: they serve their own (METRICS_PORT per instance).
 */
export async function exposeMetrics(
  app: FastifyInstance,
  metrics: Metrics,
  options: { token: string | null; port: number | null; host: string; clusterWorker?: boolean },
  onError?: (err: unknown) => void,
): Promise<MetricsServer | null> {
  if (options.clusterWorker ?? isSupervisedWorker()) return null;
  const endpoint = { render: () => metrics.render(), contentType: metrics.contentType };
  if (options.token !== null) registerMetricsRoute(app, { ...endpoint, token: options.token });
  if (options.port === null) return null;
  return startMetricsServer(
    { ...endpoint, token: options.token },
    { host: options.host, port: options.port },
    onError,
  );
}
