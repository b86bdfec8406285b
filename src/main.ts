// Process entry: parse config, build the gateway, listen, and shut down in order on SIGTERM/SIGINT
// with a force-exit deadline. Nothing else here: the gateway is built in app.ts.
import cluster from 'node:cluster';
import { isIP, type AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { loadConfig, ConfigError, type Config } from './config/config.js';
import { createLogger, type Logger } from './observability/logger.js';
import { buildApp, type AppDeps, type Gateway } from './app.js';
import { registerWebClient } from './http/web-client.js';
import { OPEN_FILES_WANTED, openFilesLimit } from './lib/open-files.js';
import { applyHeapGrowth } from './lib/heap-growth.js';

export async function startGateway(
  config: Config,
  logger: Logger,
  deps: Omit<AppDeps, 'logger'> = {},
): Promise<Gateway> {
  if (config.secrets.generated) {
    logger.warn(
      { file: `${config.dataDir}/secrets.json` },
      'JWT_ACCESS_SECRET, JWT_REFRESH_SECRET or ENCRYPTION_KEY not set: using secrets generated in the data folder. Set them in production.',
    );
  }
  applyHeapGrowth(config.heapGrowingPercent);
  const openFiles = openFilesLimit();
  if (openFiles !== null && openFiles < OPEN_FILES_WANTED) {
    logger.warn(
      { openFiles, wanted: OPEN_FILES_WANTED },
      'the open-file limit caps the viewers this process can take (one descriptor each): raise it (LimitNOFILE, ulimit -n; deploy/README.md, "Open files")',
    );
  }
  const gateway = await buildApp(config, { logger, ...deps });
  // A relay serves viewers only; the web client comes from the api processes.
  if (config.role !== 'relay')
    await registerWebClient(gateway.app, { publicDir: config.http.publicDir, logger });
  gateway.start();
  await gateway.app.listen({
    host: config.http.host,
    port: config.http.port,
    backlog: config.http.listenBacklog,
  });
  const port = (gateway.app.server.address() as AddressInfo).port;
  logger.info(
    { host: config.http.host, port, store: gateway.store.dialect, url: openUrl(config.http.host, port) },
    'CloudDesk gateway listening',
  );
  // One line for the person who started it, beside the JSON log (which stays alone on stdout, so it
  // can be piped). Under node:cluster the first worker speaks for all of them.
  if (!cluster.isWorker || cluster.worker?.id === 1) process.stderr.write(`${readyLine(config, port)}\n`);
  return gateway;
}

/** The address a browser on this machine opens: a wildcard listen address becomes localhost. */
export function openUrl(host: string, port: number): string {
  const name = host === '' || host === '0.0.0.0' || host === '::' ? 'localhost' : host;
  return `http://${isIP(name) === 6 ? `[${name}]` : name}:${port}/`;
}

/** Where a postgres:// or redis:// URL points, without its credentials. */
function endpointOf(url: string): string {
  try {
    const u = new URL(url);
    return `${u.host}${u.pathname.length > 1 ? u.pathname : ''}`;
  } catch {
    return 'the configured server';
  }
}

/** `CloudDesk is ready: open http://localhost:3000/ · data: … · coordination: …` */
export function readyLine(config: Config, port: number): string {
  const data =
    config.databaseUrl === null
      ? `${config.dataDir} (embedded SQLite)`
      : `PostgreSQL at ${endpointOf(config.databaseUrl)}`;
  return `CloudDesk is ready: open ${openUrl(config.http.host, port)} · data: ${data} · coordination: ${coordinationOf(config)}`;
}

function coordinationOf(config: Config): string {
  const r = config.redis;
  if (r === null) return 'in-process (single node)';
  const list = (e: readonly { host: string; port: number }[]) =>
    e.map((x) => `${x.host}:${x.port}`).join(',');
  if (r.mode === 'standalone') return `Redis at ${endpointOf(r.url)}`;
  if (r.mode === 'sentinel') return `Redis "${r.name}" through Sentinel at ${list(r.sentinels)}`;
  return `Redis Cluster at ${list(r.nodes)}`;
}

/** SIGTERM/SIGINT → ordered shutdown; a second signal or the deadline forces the exit. */
export function handleSignals(gateway: Gateway, config: Config, logger: Logger): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    const force = setTimeout(() => {
      logger.error('shutdown deadline passed: exiting');
      process.exit(1);
    }, config.shutdown.timeoutMs);
    force.unref();
    gateway.shutdown(signal).then(
      () => process.exit(0),
      (e: unknown) => {
        logger.error({ err: e }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** Parses the configuration; on bad values prints every problem and exits non-zero. */
export function loadConfigOrExit(env: Record<string, string | undefined> = process.env): Config {
  try {
    return loadConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(1);
    }
    throw e;
  }
}

export function createProcessLogger(config: Config): Logger {
  const logger = createLogger({ level: config.log.level });
  process.on('unhandledRejection', (e) => logger.error({ err: e }, 'unhandled rejection'));
  return logger;
}

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createProcessLogger(config);
  const gateway = await startGateway(config, logger);
  handleSignals(gateway, config, logger);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((e: unknown) => {
    process.stderr.write(
      `CloudDesk failed to start: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
    );
    process.exit(1);
  });
}
