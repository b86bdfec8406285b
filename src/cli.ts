#!/usr/bin/env node
// `clouddesk start [--workers N]`: one gateway process, or a node:cluster primary with N workers
// (0 = one per core) that all share the port. Flags override WORKERS from the environment.
import cluster from 'node:cluster';
import { parseArgs } from 'node:util';
import { loadConfig, ConfigError, type Config } from './config/config.js';
import { createLogger } from './observability/logger.js';
import { runCluster } from './cluster/cluster-supervisor.js';
import { handleSignals, startGateway } from './main.js';

const usage = 'usage: clouddesk start [--workers N]   (N = 0: one worker per core; default: WORKERS or 1)';

async function main(argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { workers: { type: 'string', short: 'w' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help || positionals[0] !== 'start' || positionals.length > 1) {
    process.stderr.write(`${usage}\n`);
    process.exit(values.help ? 0 : 2);
  }
  let config: Config;
  try {
    config = loadConfig(
      values.workers === undefined ? process.env : { ...process.env, WORKERS: values.workers },
    );
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(1);
    }
    throw e;
  }
  const logger = createLogger({ level: config.log.level });
  const workerLabel = cluster.isWorker ? String(cluster.worker?.id ?? 0) : '0';
  const startOne = async () => {
    const gateway = await startGateway(config, logger.child({ worker: workerLabel }), {
      worker: workerLabel,
    });
    handleSignals(gateway, config, logger);
  };
  if (config.cluster.workers === 1) return startOne();
  await runCluster({
    workers: config.cluster.workers,
    startWorker: startOne,
    logger,
    shutdownTimeoutMs: config.shutdown.timeoutMs,
    metrics:
      config.metrics.port === null
        ? null
        : { host: config.http.host, port: config.metrics.port, token: config.metrics.token },
  });
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(
    `CloudDesk failed to start: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
  );
  process.exit(1);
});
