// The `--workers N` supervisor on real node:cluster processes. This file is its own worker fixture:
// forked as a cluster worker it runs a tiny HTTP server (shared port) that drains on SIGTERM, records
// a metric, and (by env) fails to start or ignores SIGTERM. As the primary it runs the tests.
import cluster from 'node:cluster';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { runCluster, type ClusterOptions, type ClusterPrimary } from '../src/cluster/cluster-supervisor.js';
import { createLogger } from '../src/observability/logger.js';
import { Metrics } from '../src/observability/metrics.js';
import { isProcessAlive } from './helpers/sshd.js';
import { freePort } from './helpers/free-port.js';

const logger = createLogger({ level: 'silent' });

async function fixtureWorker(): Promise<void> {
  const mode = process.env.CD_TEST_WORKER_MODE ?? 'serve';
  if (mode === 'fail-start') throw new Error('cannot start (fixture)');
  const metrics = new Metrics({
    worker: String(cluster.worker?.id ?? 0),
    node: 'fixture',
    processMetrics: false,
  });
  metrics.error('FIXTURE');
  const server = createServer((_req, res) => res.end(String(process.pid)));
  await new Promise<void>((resolve) => server.listen(Number(process.env.CD_TEST_PORT), '127.0.0.1', resolve));
  process.on('SIGTERM', () => {
    if (mode === 'ignore-term') return;
    // The gateway drains here; the fixture just closes its listener and leaves.
    server.close(() => process.exit(0));
  });
}

const baseOptions = (over: Partial<ClusterOptions> = {}): ClusterOptions => ({
  workers: 2,
  startWorker: fixtureWorker,
  logger,
  shutdownTimeoutMs: 5_000,
  handleSignals: false,
  setup: { exec: fileURLToPath(import.meta.url), execArgv: ['--import', 'tsx'], silent: true },
  ...over,
});

if (cluster.isWorker) {
  await runCluster(baseOptions());
} else {
  // Worker output is piped (silent) so it cannot mix into the test reporter's stream; keep stderr for failures.
  let workerStderr = '';
  cluster.on('fork', (w) => {
    w.process.stdout?.resume();
    w.process.stderr?.on('data', (d: Buffer) => (workerStderr += d.toString()));
  });

  const started: ClusterPrimary[] = [];
  const start = async (over: Partial<ClusterOptions>): Promise<ClusterPrimary> => {
    const primary = await runCluster(baseOptions(over));
    assert.ok(primary);
    started.push(primary);
    return primary;
  };

  void describe('cluster supervisor', () => {
    after(async () => {
      await Promise.all(started.map((p) => p.shutdown('test over')));
      if (process.exitCode) console.error(workerStderr);
    });

    void it(
      'forks N workers sharing one port, restarts a killed one, drains all on shutdown',
      { timeout: 60_000 },
      async () => {
        const port = await freePort();
        const primary = await start({
          env: { CD_TEST_PORT: String(port) },
          metrics: { host: '127.0.0.1', port: 0, token: 'tok' },
        });
        await primary.ready();
        const pids = primary.workerPids();
        assert.equal(pids.length, 2);
        const answer = await (await fetch(`http://127.0.0.1:${port}/`)).text();
        assert.ok(pids.includes(Number(answer)), 'a worker answered on the shared port');

        // The primary serves every worker's metrics, each series with its worker label.
        const metricsPort = primary.metricsPort();
        assert.ok(metricsPort);
        assert.equal((await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).status, 401);
        const text = await (
          await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { headers: { authorization: 'Bearer tok' } })
        ).text();
        const workerLabels = [...text.matchAll(/clouddesk_errors_total\{[^}]*worker="(\d+)"/g)].map(
          (m) => m[1],
        );
        assert.equal(new Set(workerLabels).size, 2, text);

        process.kill(pids[0]!, 'SIGKILL');
        while (primary.restarts() < 1 || primary.workerPids().length < 2)
          await new Promise((r) => setTimeout(r, 20));
        await primary.ready();
        const after2 = primary.workerPids();
        assert.ok(!after2.includes(pids[0]!), 'the dead worker was replaced');
        assert.ok(after2.includes(pids[1]!), 'the other worker kept running');

        assert.equal(await primary.shutdown('test'), 0);
        for (const pid of after2) assert.equal(isProcessAlive(pid), false);
        assert.equal(primary.metricsPort(), null);
      },
    );

    void it('stops instead of spinning when workers keep dying', { timeout: 60_000 }, async () => {
      const primary = await start({
        workers: 1,
        maxRestarts: 2,
        env: { CD_TEST_WORKER_MODE: 'fail-start' },
      });
      assert.equal(await primary.exited, 1);
      assert.equal(primary.restarts(), 2);
      assert.deepEqual(primary.workerPids(), []);
    });

    void it(
      '`clouddesk start --workers 2`: real gateways, one port, all metrics from the primary, SIGTERM drains',
      { timeout: 120_000 },
      async () => {
        const repo = resolve(fileURLToPath(new URL('.', import.meta.url)), '..');
        const dataDir = await mkdtemp(join(tmpdir(), 'cd-cli-cluster-'));
        const [port, metricsPort] = [await freePort(), await freePort()];
        const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'start', '--workers', '2'], {
          cwd: repo,
          env: {
            PATH: process.env.PATH ?? '/usr/bin:/bin',
            HOME: process.env.HOME ?? '/root',
            HOST: '127.0.0.1',
            PORT: String(port),
            METRICS_PORT: String(metricsPort),
            METRICS_TOKEN: 'tok',
            DATA_DIR: dataDir,
            // Workers share tickets, limits and leases only through Redis (config refuses otherwise).
            REDIS_URL: 'redis://127.0.0.1:6379',
            LOG_LEVEL: 'warn',
            SHUTDOWN_TIMEOUT_MS: '3000',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let log = '';
        child.stdout.on('data', (d: Buffer) => (log += d.toString()));
        child.stderr.on('data', (d: Buffer) => (log += d.toString()));
        const exited = once(child, 'exit');
        after(async () => {
          if (child.exitCode === null && child.signalCode === null) {
            child.kill('SIGKILL');
            await exited;
          }
          await rm(dataDir, { recursive: true, force: true });
        });
        const metricsText = async () => {
          const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, {
            headers: { authorization: 'Bearer tok' },
          });
          return res.status === 200 ? res.text() : '';
        };
        // Ready once both workers answer in the primary's aggregated metrics.
        const deadline = Date.now() + 60_000;
        let text = '';
        for (;;) {
          text = await metricsText().catch(() => '');
          if (
            new Set([...text.matchAll(/clouddesk_viewers_live\{worker="(\d+)"/g)].map((m) => m[1])).size === 2
          )
            break;
          assert.ok(child.exitCode === null, `cli exited: ${log}`);
          assert.ok(Date.now() < deadline, `workers not up: ${log}`);
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.equal((await fetch(`http://127.0.0.1:${port}/api/ready`)).status, 200);
        // Workers do not serve metrics on the public port (a scrape would hit a random worker).
        const onApp = await fetch(`http://127.0.0.1:${port}/metrics`, {
          headers: { authorization: 'Bearer tok' },
        });
        assert.doesNotMatch(await onApp.text(), /clouddesk_viewers_live/);

        child.kill('SIGTERM');
        const [code] = (await exited) as [number | null];
        assert.equal(code, 0, log);
      },
    );

    void it('SIGKILLs a worker that does not drain by the deadline', { timeout: 60_000 }, async () => {
      const port = await freePort();
      const primary = await start({
        workers: 1,
        shutdownTimeoutMs: 200,
        env: { CD_TEST_PORT: String(port), CD_TEST_WORKER_MODE: 'ignore-term' },
      });
      await primary.ready();
      const [pid] = primary.workerPids();
      assert.equal(await primary.shutdown('test'), 1);
      assert.equal(isProcessAlive(pid!), false);
    });
  });
}
