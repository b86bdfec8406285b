#!/usr/bin/env node
// `clouddesk start [--workers N]`: one gateway process, or a node:cluster primary with N workers
// (0 = one per core) that all share the port. Flags override WORKERS from the environment.
import cluster from 'node:cluster';
import { parseArgs } from 'node:util';
import { runCluster } from './cluster/cluster-supervisor.js';
import { createProcessLogger, handleSignals, loadConfigOrExit, startGateway } from './main.js';

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
  const config = loadConfigOrExit(
    values.workers === undefined ? process.env : { ...process.env, WORKERS: values.workers },
  );
  const logger = createProcessLogger(config);
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
