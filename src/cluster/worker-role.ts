// Whether this process is a worker of our own `--workers N` supervisor (cluster-supervisor.ts), as
// opposed to a single process or a PM2 cluster-mode instance (which node:cluster also reports as a
// worker). Only our supervisor's primary aggregates and serves its workers' metrics, so only its
// workers must leave METRICS_PORT and /metrics alone.
let supervised = false;

export function markSupervisedWorker(): void {
  supervised = true;
}

export function isSupervisedWorker(): boolean {
  return supervised;
}
