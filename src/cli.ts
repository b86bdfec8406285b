#!/usr/bin/env node
// `clouddesk start [--workers N]`: one gateway process, or a node:cluster primary with N workers
// (0 = one per core) that all share the port. Flags override WORKERS from the environment.
// `clouddesk admin create --email E --password-stdin` / `clouddesk admin promote EMAIL`: see
// admin/admin-cli.ts. `clouddesk backup --out FILE` / `clouddesk restore FILE [--force]`: see
// backup/backup.ts.
import cluster from 'node:cluster';
import { parseArgs } from 'node:util';
import { runCluster } from './cluster/cluster-supervisor.js';
import { createProcessLogger, handleSignals, loadConfigOrExit, startGateway } from './main.js';
import { adminCreate, adminPromote, CliError } from './admin/admin-cli.js';
import { createLogger } from './observability/logger.js';
import { BackupError } from './backup/backup.js';
import { runBackup, runRestore } from './backup/backup-cli.js';

const usage = [
  'usage: clouddesk start [--workers N]   (N = 0: one worker per core; default: WORKERS or 1)',
  '       clouddesk admin create --email EMAIL --password-stdin',
  '       clouddesk admin promote EMAIL',
  '       clouddesk backup --out FILE',
  '       clouddesk restore FILE [--force]   (stop the gateway first; --force replaces an existing SQLite database)',
].join('\n');

function fail(message: string, code = 2): never {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  // One line: what `echo pass |` or a password manager pipes, without its newline.
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

async function admin(argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { email: { type: 'string' }, 'password-stdin': { type: 'boolean' } },
  });
  const config = loadConfigOrExit();
  // The JSON log goes to stderr here: stdout carries only the one line for the operator.
  const logger = createLogger(
    { level: config.log.level === 'info' ? 'warn' : config.log.level },
    process.stderr,
  );
  const [command, ...rest] = positionals;
  let message: string;
  try {
    if (command === 'create' && rest.length === 0 && values.email && values['password-stdin']) {
      message = await adminCreate(config, logger, values.email, await readStdin());
    } else if (command === 'promote' && rest.length === 1 && !values.email) {
      message = await adminPromote(config, logger, rest[0]!);
    } else {
      fail(usage);
    }
  } catch (e) {
    if (e instanceof CliError) fail(`clouddesk admin: ${e.message}`, 1);
    throw e;
  }
  process.stdout.write(`${message}\n`);
}

async function backupOrRestore(command: 'backup' | 'restore', argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { out: { type: 'string', short: 'o' }, force: { type: 'boolean' } },
  });
  const ok =
    command === 'backup'
      ? values.out !== undefined && positionals.length === 0 && !values.force
      : values.out === undefined && positionals.length === 1;
  if (!ok) fail(usage);
  const config = loadConfigOrExit();
  try {
    const message =
      command === 'backup'
        ? await runBackup(config, values.out!)
        : await runRestore(config, positionals[0]!, values.force === true);
    process.stdout.write(`${message}\n`);
  } catch (e) {
    if (e instanceof BackupError) fail(`clouddesk ${command}: ${e.message}`, 1);
    throw e;
  }
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'admin') return admin(argv.slice(1));
  if (argv[0] === 'backup' || argv[0] === 'restore') return backupOrRestore(argv[0], argv.slice(1));
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
