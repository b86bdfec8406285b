// Builds a ready gateway from config and dependencies, apart from listening (main.ts listens).
// Tests build it with real or test dependencies and drive it with inject() or a real socket.
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import fastifyCookie from '@fastify/cookie';
import fastifyCors from '@fastify/cors';
import fastifyHelmet from '@fastify/helmet';
import { SHUTDOWN_AFTER_GRACE_MS, type Config } from './config/config.js';
import { systemClock, type Clock } from './lib/clock.js';
import { randomId, type IdGenerator } from './lib/ids.js';
import type { Logger } from './observability/logger.js';
import { openStore, type Store } from './store/database.js';
import { UserRepository } from './store/user.repository.js';
import { InstanceRepository } from './store/instance.repository.js';
import { SessionRepository } from './store/session.repository.js';
import { UsageRepository } from './store/usage.repository.js';
import { SecretBox } from './crypto/secret-box.js';
import type { Coordinator } from './coordination/coordinator.js';
import { createCoordinator } from './coordination/create-coordinator.js';
import { RedisCoordinator } from './coordination/redis-coordinator.js';
import { createRateLimits, enforceApiRateLimit, type RateLimits } from './coordination/rate-limits.js';
import { COORDINATION_BEAT_MS, CoordinationWatch } from './coordination/coordination-watch.js';
import { NodeRepository } from './store/node.repository.js';
import { Metrics, exposeMetrics, registerHttpMetrics, type MetricsServer } from './observability/metrics.js';
import { LongTaskMonitor, summarizeLongTasks } from './observability/long-tasks.js';
import { AuthService } from './auth/auth.service.js';
import { registerAuthRoutes } from './auth/auth.routes.js';
import { OidcClient, type OidcProviderPort } from './identity/oidc-client.js';
import { OidcService } from './identity/oidc.service.js';
import { registerOidcRoutes } from './identity/oidc.routes.js';
import { IdentityRepository } from './store/identity.repository.js';
import { TotpService } from './identity/totp.service.js';
import { registerTotpRoutes } from './identity/totp.routes.js';
import type { SignInGuard } from './auth/sign-in-guard.js';
import { AddressGuard, type InterfaceSource, type Resolver } from './instances/address-guard.js';
import { InstanceService } from './instances/instance.service.js';
import { registerInstanceRoutes } from './instances/instance.routes.js';
import { SessionService } from './sessions/session.service.js';
import { registerSessionRoutes } from './sessions/session.routes.js';
import { ActivityBuffer } from './sessions/activity-buffer.js';
import { IdleSweeper } from './sessions/idle-sweeper.js';
import type { DesktopStopperOptions } from './sessions/desktop-stopper.js';
import { UsageService } from './usage/usage.service.js';
import { registerUsageRoutes } from './usage/usage.routes.js';
import { SshPool } from './ssh/ssh-pool.js';
import { FileService } from './files/file.service.js';
import { registerFileRoutes } from './files/file.routes.js';
import { DownloadLinks } from './files/download-links.js';
import { auditFileEvents, type FileEvents } from './files/file-events.js';
import { DesktopService } from './desktop/desktop.service.js';
import { VncGateway, rejectUpgrade, type VncGatewayHooks } from './relay/vnc-gateway.js';
import { AppError } from './errors/errors.js';
import { registerErrorHandling } from './http/error-handler.js';
import { registerClosingGuard } from './http/closing-guard.js';
import { makeAuthenticate } from './http/authenticate.js';
import { registerHealthRoutes } from './http/health.routes.js';
import { describeApiRoutes, registerApiDocs } from './http/api-docs.js';
import { isOriginAllowed, originMatches } from './http/origin.js';
import { compileProxyTrust } from './http/client-address.js';
import { RequestLogController } from './http/request-logging.js';
import { AuditRepository } from './store/audit.repository.js';
import { AuditLog } from './audit/audit-log.js';
import { AuditRetention } from './audit/audit-retention.js';
import { registerAuditRoutes } from './audit/audit.routes.js';
import { runWithRequestContext } from './audit/request-context.js';
import { AdminService } from './admin/admin.service.js';
import { registerAdminRoutes } from './admin/admin.routes.js';
import { ShareRepository } from './store/share.repository.js';
import { ShareService } from './shares/share.service.js';
import { registerShareRoutes } from './shares/share.routes.js';

export interface AppDeps {
  logger: Logger;
  clock?: Clock;
  newId?: IdGenerator;
  store?: Store;
  coordinator?: Coordinator;
  /** Replaces the OpenID provider adapter (default: openid-client against OIDC_ISSUER). */
  oidcProvider?: OidcProviderPort;
  /** Replaces the rate-limit sign-in guard (unit tests of the auth flow). */
  signInGuard?: SignInGuard;
  resolver?: Resolver;
  /** The gateway's own interfaces, refused as instance addresses (default: os.networkInterfaces). */
  networkInterfaces?: InterfaceSource;
  gatewayHooks?: VncGatewayHooks;
  /** Where file operations are reported (default: the audit trail). */
  fileEvents?: FileEvents;
  /** node:cluster worker label for metrics ('0' for a single process). */
  worker?: string;
  /**
   * What sessions use to start, stop and check desktops, around the real service (tests hold a start or
   * a stop at a gate, or make a stop fail).
   */
  wrapDesktops?: (real: DesktopService) => Pick<DesktopService, 'start' | 'stop' | 'isAlive'>;
  /** Waits out SHUTDOWN_READY_GRACE_MS in shutdown() (default a timer; tests end it when they choose). */
  readyGrace?: (ms: number) => Promise<void>;
  /** Backoff and bounds of the background desktop stop beyond DESKTOP_STOPS_IN_FLIGHT (tests). */
  desktopStops?: Omit<DesktopStopperOptions, 'concurrency'>;
}

export interface Gateway {
  app: FastifyInstance;
  config: Config;
  store: Store;
  coordinator: Coordinator;
  rateLimits: RateLimits;
  metrics: Metrics;
  auth: AuthService;
  instances: InstanceService;
  sessions: SessionService;
  files: FileService;
  sshPool: SshPool;
  desktops: DesktopService;
  vnc: VncGateway;
  activity: ActivityBuffer;
  sweeper: IdleSweeper;
  /** The audit sink (`record(type, event)`); `flush()` writes what is buffered. */
  audit: AuditLog;
  auditRetention: AuditRetention;
  admin: AdminService;
  shares: ShareService;
  /** With Redis: whether an outage is this node's alone or every node's (readiness, the metric). */
  coordinationWatch: CoordinationWatch;
  isDraining(): boolean;
  /** Starts background timers (heartbeats, activity flush, idle sweep). */
  start(): void;
  /**
   * Ordered shutdown: not ready but serving for SHUTDOWN_READY_GRACE_MS → viewers told to reconnect
   * elsewhere → drained (bounded) → HTTP closed (coded 503s) → SSH pool closed → coordinator and store
   * closed last, all within SHUTDOWN_TIMEOUT_MS.
   */
  shutdown(reason: string): Promise<void>;
}

export async function buildApp(config: Config, deps: AppDeps): Promise<Gateway> {
  const logger = deps.logger;
  const clock = deps.clock ?? systemClock;
  const newId = deps.newId ?? randomId;
  const metrics = new Metrics({
    worker: deps.worker ?? '0',
    node: config.cluster.nodeId,
    role: config.role === 'all' ? 'gateway' : config.role,
  });
  // One rule for the client's address: Fastify's request.ip and the viewer upgrade's both use it.
  const proxyTrust = compileProxyTrust(config.http.trustProxy);
  const store =
    deps.store ??
    (await openStore({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      retryBudgetMs: config.databaseRetryMs,
      onRetry: (failure) => metrics.storeRetried(failure),
      onEvict: () =>
        logger.warn(
          { component: 'store' },
          'dropped a database connection whose statement went unanswered; the next statement dials a new one',
        ),
    }));
  const coordinator = deps.coordinator ?? createCoordinator(config, { clock, logger });
  const coordinationKind = coordinator instanceof RedisCoordinator ? 'redis' : 'memory';
  // In-process coordination has nothing to watch: the watch is then never started nor asked.
  const coordinationWatch = new CoordinationWatch(
    {
      coordinator,
      nodes: new NodeRepository(store),
      clock,
      logger: logger.child({ component: 'coordination' }),
    },
    { nodeId: config.cluster.nodeId, graceMs: config.redisRetryMs, beatMs: COORDINATION_BEAT_MS },
  );
  const rateLimits = createRateLimits(config, coordinator, {
    onRejected: (limit) => metrics.rateLimited(limit),
  });

  const secrets = new SecretBox(config.secrets.encryption.currentKeyId, config.secrets.encryption.keys);
  const users = new UserRepository(store);
  const instanceRepo = new InstanceRepository(store);
  const sessionRepo = new SessionRepository(store);
  const usageRepo = new UsageRepository(store);
  const auditRepo = new AuditRepository(store);
  const shareRepo = new ShareRepository(store);
  const audit = new AuditLog(
    { repo: auditRepo, clock, logger: logger.child({ component: 'audit' }) },
    {
      nodeId: config.cluster.nodeId,
      onDropped: (d) => metrics.bufferDropped(d.buffer, d.reason, d.count),
    },
  );
  const auditRetention = new AuditRetention(
    { repo: auditRepo, coordinator, clock, logger: logger.child({ component: 'audit' }) },
    { retentionDays: config.audit.retentionDays, intervalMs: config.sessions.cleanupIntervalMs },
  );

  const sshPool = new SshPool({ ...config.ssh, logger: logger.child({ component: 'ssh' }), clock });
  const desktops = new DesktopService({
    pool: sshPool,
    reserveDisplay: async (target, display) => {
      const lock = await coordinator.tryLock(
        `display:${target.host}:${target.port}:${display}`,
        config.desktop.startTimeoutMs + 10_000,
      );
      return lock && (() => coordinator.unlock(lock));
    },
    logger: logger.child({ component: 'desktop' }),
    clock,
    options: config.desktop,
  });
  const identities = new IdentityRepository(store);
  const totp = new TotpService(
    { identities, secrets, coordinator, audit, clock },
    { require2fa: config.auth.require2fa },
  );
  const auth = new AuthService(
    { users, clock, newId, audit, logger, secondFactor: totp },
    {
      accessSecret: config.secrets.jwtAccessSecret,
      refreshSecret: config.secrets.jwtRefreshSecret,
      accessTtlSeconds: config.auth.accessTtlSeconds,
      refreshTtlSeconds: config.auth.refreshTtlSeconds,
      refreshReuseGraceMs: config.auth.refreshReuseGraceMs,
      registration: config.auth.registration,
      firstUserBecomesAdmin: config.auth.firstUserBecomesAdmin,
      local: config.auth.local,
    },
  );
  const oidc =
    config.oidc &&
    new OidcService(
      {
        provider: deps.oidcProvider ?? new OidcClient(config.oidc),
        coordinator,
        auth,
        users,
        identities,
        audit,
        clock,
      },
      config.oidc,
    );
  const instances = new InstanceService({
    instances: instanceRepo,
    secrets,
    guard: new AddressGuard(config.instances, {
      resolve: deps.resolver,
      interfaces: deps.networkInterfaces,
      clock,
    }),
    desktops,
    clock,
    newId,
    audit,
  });
  const sessions = new SessionService(
    {
      sessions: sessionRepo,
      instances,
      desktops: deps.wrapDesktops ? deps.wrapDesktops(desktops) : desktops,
      coordinator,
      secrets,
      clock,
      newId,
      logger,
      audit,
      shares: shareRepo,
      onStartRejected: (reason) => metrics.desktopStartRejected(reason),
      onStopOutcome: (outcome) => metrics.desktopStop(outcome),
    },
    {
      maxPerUser: config.sessions.maxPerUser,
      idleTimeoutMs: config.sessions.idleTimeoutMs,
      ticketTtlMs: config.sessions.ticketTtlMs,
      startTimeoutMs: config.desktop.startTimeoutMs,
      startQueue: {
        inFlight: config.admission.startsInFlight,
        inFlightPerInstance: config.admission.startsInFlightPerInstance,
        maxQueued: config.admission.startQueue,
        maxWaitMs: config.admission.startQueueWaitMs,
      },
      stops: { concurrency: config.admission.stopsInFlight, ...deps.desktopStops },
    },
  );
  const files = new FileService(
    {
      instances,
      pool: sshPool,
      events: deps.fileEvents ?? auditFileEvents(audit),
      clock,
    },
    config.files,
  );
  const downloadLinks = new DownloadLinks(
    config.secrets.jwtAccessSecret,
    config.files.downloadLinkTtlMs,
    clock,
  );
  const shares = new ShareService(
    { shares: shareRepo, sessions: sessionRepo, users, coordinator, audit, clock, newId },
    {
      maxMinutes: config.shares.maxMinutes,
      guests: config.shares.guests,
      maxViewers: config.sessions.maxViewers,
      ticketTtlMs: config.sessions.ticketTtlMs,
    },
  );
  const activity = new ActivityBuffer(sessionRepo, usageRepo, logger, {
    onDropped: (d) => metrics.bufferDropped(d.buffer, d.reason, d.count),
  });
  const usage = new UsageService({ usage: usageRepo, clock });
  const vnc = new VncGateway(
    {
      sessions,
      desktops,
      coordinator,
      activity,
      clock,
      logger: logger.child({ component: 'relay' }),
      audit,
      standing: {
        closedBefore: (ids) => users.listClosedBefore(ids),
        revokedShares: (ids) => shareRepo.listRevokedAmong(ids),
        removedGuests: (ids) => shareRepo.listRemovedGuestsAmong(ids),
      },
      isOriginAllowed: (origin, host) => isOriginAllowed(origin, host, config.cors.origins),
      hooks: {
        // A ticket issued just before its account was disabled is refused too (403 ACCOUNT_DISABLED).
        consumeWsConnect: async (userId) => {
          await auth.activeUser(userId);
          await rateLimits.consumeWsConnect(userId);
        },
        onViewerRtt: (ms) => metrics.viewerRttMs(ms),
        onViewerClosed: (code) => metrics.wsClosed(code),
        onViewerKbps: (kbps) => metrics.viewerKbps(kbps),
        ...deps.gatewayHooks,
      },
    },
    {
      ...config.relay,
      nodeId: config.cluster.nodeId,
      proxyTrust,
      maxViewers: config.sessions.maxViewers,
      // The configured caps, the same for every viewer; SessionEndpoint.policy narrows them per viewer.
      basePolicy: {
        viewOnly: false,
        quality: config.caps.quality,
        compressionMin: config.caps.compressionMin,
        maxKbps: config.caps.sessionMaxKbps,
        maxGeometry: config.caps.maxGeometry,
      },
    },
  );
  activity.addSampler(() => vnc.sampleUsage());
  const sweeper = new IdleSweeper(sessions, activity, logger, config.sessions.cleanupIntervalMs);
  const admin = new AdminService({
    users,
    sessionRows: sessionRepo,
    sessions,
    coordinator,
    audit,
    clock,
  });

  // Typed as Fastify's logger so the app is a plain FastifyInstance for every route module.
  const fastifyLogger: FastifyBaseLogger = logger;
  const app = Fastify({
    loggerInstance: fastifyLogger,
    trustProxy: proxyTrust,
    bodyLimit: config.http.bodyLimitBytes,
    genReqId: () => newId(),
    requestIdHeader: false,
    logController: new RequestLogController(),
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
    routerOptions: { maxParamLength: 200 },
    // Answered by our closing guard instead, with a code (http/closing-guard.ts).
    return503OnClosing: false,
  });
  // Before any route: every /api route is described as it is registered (http/api-docs.ts).
  describeApiRoutes(app);
  if (config.http.apiDocs) await registerApiDocs(app);
  await app.register(fastifyCookie);
  // Security headers (Helmet's defaults). API answers get a deny-all CSP; the web client's HTML
  // replaces it with its own (http/web-client.ts).
  await app.register(fastifyHelmet, {
    contentSecurityPolicy: {
      directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] },
      useDefaults: false,
    },
    crossOriginEmbedderPolicy: false,
    hsts: config.env === 'production',
  });
  // Cross-origin API calls only from CORS_ORIGIN (exact origins or https://*.domain patterns).
  await app.register(fastifyCors, {
    origin: (origin, cb) => cb(null, origin !== undefined && originMatches(origin, config.cors.origins)),
    credentials: true,
    methods: ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'],
    allowedHeaders: ['Content-Type', 'Authorization'],
    exposedHeaders: ['RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset', 'Retry-After'],
    maxAge: 600,
  });
  // After CORS, so a browser can read the coded 503 of a closing gateway.
  let closing = false;
  registerClosingGuard(app, () => closing);
  // Who is asking, for the audit trail (audit/request-context.ts); authenticate() adds the user.
  app.addHook('onRequest', (request, _reply, done) => {
    runWithRequestContext({ ip: request.ip, userId: null }, done);
  });
  registerErrorHandling(app, { onError: (code) => metrics.error(code) });
  registerHttpMetrics(app, metrics);
  const authenticate = makeAuthenticate(auth, (userId, reply) =>
    enforceApiRateLimit(rateLimits, userId, reply),
  );
  let draining = false;
  // A relay (GATEWAY_ROLE=relay) serves viewers and health checks only: no API route on its loop.
  if (config.role !== 'relay') registerApiRoutes();
  function registerApiRoutes(): void {
    registerAuthRoutes(app, {
      auth,
      guard: deps.signInGuard ?? rateLimits,
      authenticate,
      refreshTtlSeconds: config.auth.refreshTtlSeconds,
      registration: config.auth.registration,
      methods: { local: config.auth.local, oidc: oidc && { name: oidc.name } },
      publishSignOut: (userId) => coordinator.publish({ type: 'sign-out-user', userId }),
      isOriginAllowed: (origin, host) => isOriginAllowed(origin, host, config.cors.origins),
    });
    if (oidc)
      registerOidcRoutes(app, {
        oidc,
        guard: deps.signInGuard ?? rateLimits,
        refreshTtlSeconds: config.auth.refreshTtlSeconds,
        redirectUri: config.oidc?.redirectUri ?? null,
      });
    registerTotpRoutes(app, {
      totp,
      auth,
      users,
      guard: deps.signInGuard ?? rateLimits,
      authenticate,
      refreshTtlSeconds: config.auth.refreshTtlSeconds,
    });
    registerInstanceRoutes(app, { instances, sessions, authenticate });
    registerFileRoutes(app, { files, links: downloadLinks, authenticate });
    registerSessionRoutes(app, {
      sessions,
      authenticate,
      onSetupDuration: (ms) => metrics.sessionSetup(ms, 'ok'),
    });
    registerUsageRoutes(app, { usage, authenticate });
    registerShareRoutes(app, { shares, authenticate });
    registerAdminRoutes(app, { admin, auth, authenticate });
    registerAuditRoutes(app, { audit: auditRepo, authenticate });
  }
  registerHealthRoutes(app, {
    store,
    coordinator,
    coordinationKind,
    coordinationWatch,
    nodeId: config.cluster.nodeId,
    role: config.role,
    isDraining: () => draining,
    counts: () => {
      const ssh = sshPool.stats();
      const relay = vnc.stats();
      return {
        websockets: relay.viewers,
        sessionsWithViewers: relay.sessions,
        sshConnections: ssh.connections,
        sshChannels: ssh.channels,
      };
    },
  });
  // An api process (GATEWAY_ROLE=api) has no viewer route: a WebSocket the balancer sent here is refused.
  app.server.on('upgrade', (req, socket, head) =>
    config.role === 'api'
      ? rejectUpgrade(socket, new AppError('ROUTE_NOT_FOUND'))
      : vnc.handleUpgrade(req, socket, head),
  );
  metrics.setSources({
    activeSessions: () => sessionRepo.countAllLive(),
    liveViewers: () => vnc.viewerCount,
    sshConnections: () => sshPool.stats().connections,
    sshChannels: () => sshPool.stats().channels,
    relayBytes: () => {
      const s = vnc.stats();
      return { toViewer: s.bytesToViewer, fromViewer: s.bytesFromViewer };
    },
    relayBudgetPauses: () => vnc.stats().budgetPauses,
    desktopStartQueue: () => sessions.startQueue.depth,
    desktopStartsInFlight: () => sessions.startQueue.inFlight,
    desktopStopsPending: () => sessions.stopper.pending,
    ...(coordinationKind === 'redis' ? { coordinationOutage: () => coordinationWatch.outage } : {}),
  });
  const metricsServer: MetricsServer | null = await exposeMetrics(app, metrics, {
    token: config.metrics.token,
    port: config.metrics.port,
    host: config.http.host,
  });

  // Opt-in: the loop profiling itself in 10 s windows, long tasks counted and the window's worst logged.
  const longTaskMonitor =
    config.loopLongTaskMs > 0
      ? new LongTaskMonitor({
          overMs: config.loopLongTaskMs,
          windowMs: 10_000,
          onWindow: (tasks) => {
            metrics.longTasks(tasks);
            if (tasks.length > 0)
              logger.info(
                {
                  role: metrics.role,
                  overMs: config.loopLongTaskMs,
                  longTasks: summarizeLongTasks(tasks).slice(0, 5),
                },
                'event loop long tasks',
              );
          },
          onError: (err) => logger.warn({ err }, 'long-task attribution failed'),
        })
      : null;

  const readyGrace = deps.readyGrace ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let timersStarted = false;
  let shutdownDone: Promise<void> | null = null;
  return {
    app,
    config,
    store,
    coordinator,
    rateLimits,
    metrics,
    auth,
    instances,
    sessions,
    files,
    sshPool,
    desktops,
    vnc,
    activity,
    sweeper,
    audit,
    auditRetention,
    admin,
    shares,
    coordinationWatch,
    isDraining: () => draining,
    start() {
      if (timersStarted) return;
      timersStarted = true;
      longTaskMonitor?.start();
      vnc.start();
      activity.start(config.sessions.activityFlushMs);
      audit.start(config.sessions.activityFlushMs);
      // The sweeps (idle sessions, stops left behind) are the control plane's: not on a relay's loop.
      if (config.role !== 'relay') sweeper.start();
      auditRetention.start();
      if (coordinationKind === 'redis') coordinationWatch.start();
    },
    shutdown(reason: string) {
      // A second call (a second signal, a test's cleanup) waits for the same drain.
      shutdownDone ??= shutdownInOrder(reason);
      return shutdownDone;
    },
  };

  async function shutdownInOrder(reason: string): Promise<void> {
    // 1. Not ready, still serving: the balancer's checks fail and it takes this gateway out, while
    //    the API calls it still sends here are answered as usual. New viewers are refused
    //    (SHUTTING_DOWN) so that they connect elsewhere; open ones stay until step 2.
    draining = true;
    vnc.refuseViewers();
    sweeper.stop();
    auditRetention.stop();
    const graceMs = config.shutdown.readyGraceMs;
    logger.info({ reason, readyGraceMs: graceMs }, 'shutting down: not ready, serving on for the grace');
    if (graceMs > 0) await readyGrace(graceMs);
    // 2. Viewers told to reconnect (4010): the balancer now sends them to another gateway.
    logger.info('shutting down: draining viewers');
    await vnc.drain(Math.max(100, config.shutdown.timeoutMs - graceMs - SHUTDOWN_AFTER_GRACE_MS));
    // 3. HTTP closed: what still arrives gets the coded 503 (http/closing-guard.ts).
    logger.info('shutting down: closing HTTP');
    closing = true;
    await app.close();
    await vnc.close();
    // Stops not finished by then stay due in the store for another gateway's sweep.
    await sessions.stopper.close(2_000);
    await activity.stop();
    // After the viewers were closed: their detach events are in this last write.
    await audit.stop();
    await sshPool.close();
    await metricsServer?.close();
    longTaskMonitor?.stop();
    metrics.close();
    await coordinationWatch.stop();
    await coordinator.close();
    await store.close();
    logger.info('shutdown complete');
  }
}
