// Process entry: parse config, build the gateway, listen, and shut down in order on SIGTERM/SIGINT
// with a force-exit deadline. Nothing else here: the gateway is built in app.ts.
import { pathToFileURL } from 'node:url';
import { loadConfig, ConfigError, type Config } from './config/config.js';
import { createLogger, type Logger } from './observability/logger.js';
import { buildApp, type AppDeps, type Gateway } from './app.js';
import { registerWebClient } from './http/web-client.js';

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
  const gateway = await buildApp(config, { logger, ...deps });
  await registerWebClient(gateway.app, { publicDir: config.http.publicDir, logger });
  gateway.start();
  await gateway.app.listen({ host: config.http.host, port: config.http.port });
  logger.info(
    { host: config.http.host, port: config.http.port, store: gateway.store.dialect },
    'CloudDesk gateway listening',
  );
  return gateway;
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
