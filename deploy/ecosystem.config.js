// PM2 in cluster mode (plan section 9.1), one gateway process per core behind PM2's own round-robin.
// An alternative to `clouddesk start --workers N` (node:cluster without PM2) — use one or the other.
//
//   npm run build && pm2 start deploy/ecosystem.config.js --env production
//   pm2 reload clouddesk      # rolling: each process drains (SIGTERM) before the next restarts
//
// Open files: PM2 has no per-app limit; every gateway inherits the PM2 daemon's, and holds one
// descriptor per viewer. Start the daemon with 65536 (`ulimit -n 65536` in its shell, or
// LimitNOFILE=65536 in the unit `pm2 startup systemd` writes): deploy/README.md, "Open files".
//
// CommonJS on purpose (deploy/package.json): PM2 loads this file with require().
// Run with PM2 6.0.14 on the build machine (see deploy/README.md): start, reload, stop.
'use strict';

const path = require('node:path');

// A process drains for up to SHUTDOWN_TIMEOUT_MS after SIGTERM; PM2 must wait longer than that
// before it SIGKILLs, or viewers are cut instead of moved.
const drainMs = Number(process.env.SHUTDOWN_TIMEOUT_MS || 10000);

module.exports = {
  apps: [
    {
      name: 'clouddesk',
      cwd: path.resolve(__dirname, '..'),
      // The CLI entry starts unconditionally; PM2 loads scripts through its own container, so an entry
      // that checks "am I process.argv[1]?" would never start under PM2.
      script: 'dist/src/cli.js',
      args: 'start',
      exec_mode: 'cluster',
      instances: 'max',
      // PM2 (>= 5.3) imports ESM entry points; the gateway is ESM ("type": "module").
      node_args: ['--enable-source-maps'],
      env: {
        NODE_ENV: 'development',
        PORT: 3000,
        // PM2 is the cluster here: each instance runs one gateway, not a node:cluster of its own.
        WORKERS: 1,
      },
      env_production: {
        NODE_ENV: 'production',
        PORT: 3000,
        WORKERS: 1,
        TRUST_PROXY: 'true',
        // Each PM2 instance gets its own metrics port (9464, 9465, …): under PM2 a shared port would
        // answer from a random instance. Scrape them all (see deploy/README.md).
        METRICS_PORT: 9464,
        // DATABASE_URL, REDIS_URL, JWT_*_SECRET, ENCRYPTION_KEY: set in the environment PM2 starts
        // from (never in this file). Several processes need PostgreSQL + Redis to share state.
      },
      increment_var: 'METRICS_PORT',
      // PM2 stops a process with SIGINT (PM2_KILL_SIGNAL in the daemon's environment changes it); the
      // gateway drains on SIGINT exactly as on SIGTERM.
      kill_timeout: drainMs + 5000,
      shutdown_with_message: false,
      max_memory_restart: '2G',
      autorestart: true,
      max_restarts: 10,
      min_uptime: '10s',
      exp_backoff_restart_delay: 200,
      listen_timeout: 10000,
      watch: false,
      merge_logs: true,
      // The gateway writes JSON lines (pino) to stdout; keep them as they are.
      log_type: 'raw',
      time: false,
    },
  ],
};
