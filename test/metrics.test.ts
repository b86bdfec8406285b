// Metrics: several apps in one process keep separate registries; live numbers are read on scrape (the
// relay's plain counters become Prometheus counters); recorded events show up with worker/node labels;
// `/metrics` is served only with the token on the app, or on its own port.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import {
  exposeMetrics,
  LOOP_DELAY_RESOLUTION_MS,
  Metrics,
  type LoopDelayHistogram,
  registerHttpMetrics,
  registerMetricsRoute,
  startMetricsServer,
} from '../src/observability/metrics.js';

function sample(text: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^([^{\s]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return null;
}

void describe('Metrics', () => {
  void it('several apps in one process each have their own registry', async () => {
    const a = new Metrics({ worker: '1', node: 'a' });
    const b = new Metrics({ worker: '2', node: 'b' });
    after(() => {
      a.close();
      b.close();
    });
    a.error('SSH_TIMEOUT');
    const textA = await a.render();
    const textB = await b.render();
    assert.equal(sample(textA, 'clouddesk_errors_total', { code: 'SSH_TIMEOUT', worker: '1', node: 'a' }), 1);
    assert.equal(sample(textB, 'clouddesk_errors_total', { code: 'SSH_TIMEOUT' }), null);
    // Default process metrics: heap and RSS.
    assert.ok((sample(textB, 'process_resident_memory_bytes', { worker: '2' }) ?? 0) > 0);
    assert.ok((sample(textB, 'nodejs_heap_size_used_bytes', { node: 'b' }) ?? 0) > 0);
  });

  void it('reads live numbers on scrape; relay byte totals become counters', async () => {
    const live = {
      sessions: 3,
      viewers: 7,
      conns: 2,
      channels: 7,
      toViewer: 1000,
      fromViewer: 40,
      pauses: 4,
    };
    const m = new Metrics({
      worker: '0',
      node: 'n1',
      processMetrics: false,
      sources: {
        activeSessions: () => Promise.resolve(live.sessions),
        liveViewers: () => live.viewers,
        sshConnections: () => live.conns,
        sshChannels: () => live.channels,
        relayBytes: () => ({ toViewer: live.toViewer, fromViewer: live.fromViewer }),
        relayBudgetPauses: () => live.pauses,
      },
    });
    after(() => m.close());
    let text = await m.render();
    assert.equal(sample(text, 'clouddesk_sessions_active'), 3);
    assert.equal(sample(text, 'clouddesk_viewers_live'), 7);
    assert.equal(sample(text, 'clouddesk_ssh_connections'), 2);
    assert.equal(sample(text, 'clouddesk_ssh_channels'), 7);
    assert.equal(sample(text, 'clouddesk_relay_bytes_total', { direction: 'to_viewer' }), 1000);
    assert.equal(sample(text, 'clouddesk_relay_bytes_total', { direction: 'from_viewer' }), 40);
    assert.equal(sample(text, 'clouddesk_relay_budget_pauses_total'), 4);

    Object.assign(live, { sessions: 1, viewers: 0, toViewer: 5000, fromViewer: 90, pauses: 9 });
    text = await m.render();
    assert.equal(sample(text, 'clouddesk_sessions_active'), 1);
    assert.equal(sample(text, 'clouddesk_viewers_live'), 0);
    assert.equal(sample(text, 'clouddesk_relay_bytes_total', { direction: 'to_viewer' }), 5000);
    assert.equal(sample(text, 'clouddesk_relay_bytes_total', { direction: 'from_viewer' }), 90);
    assert.equal(sample(text, 'clouddesk_relay_budget_pauses_total'), 9);

    // Sources connected later (the app builds its services after the metrics).
    m.setSources({ liveViewers: () => 12 });
    assert.equal(sample(await m.render(), 'clouddesk_viewers_live'), 12);
  });

  void it('records setup durations, RTTs, rejections, errors, closes and connects', async () => {
    const m = new Metrics({ worker: '3', node: 'n', processMetrics: false });
    after(() => m.close());
    m.viewerKbps(0.3);
    m.viewerKbps(1919);
    m.sessionSetup(1500, 'ok');
    m.sessionSetup(300, 'error');
    m.viewerRttMs(12);
    m.viewerRttMs(80);
    m.rateLimited('sign-in-pair');
    m.rateLimited('sign-in-pair');
    m.error('HOST_KEY_MISMATCH');
    m.wsClosed(4001);
    m.wsClosed(1006);
    m.wsClosed(1006);
    m.viewerConnected('first');
    m.viewerConnected('reconnect');
    const text = await m.render();
    assert.equal(sample(text, 'clouddesk_session_setup_duration_seconds_count', { outcome: 'ok' }), 1);
    assert.equal(
      sample(text, 'clouddesk_session_setup_duration_seconds_bucket', { outcome: 'ok', le: '2' }),
      1,
    );
    assert.equal(
      sample(text, 'clouddesk_session_setup_duration_seconds_bucket', { outcome: 'ok', le: '1' }),
      0,
    );
    assert.equal(sample(text, 'clouddesk_session_setup_duration_seconds_count', { outcome: 'error' }), 1);
    assert.equal(sample(text, 'clouddesk_viewer_rtt_seconds_count'), 2);
    assert.equal(sample(text, 'clouddesk_viewer_bandwidth_kbps_count'), 2);
    assert.equal(sample(text, 'clouddesk_viewer_bandwidth_kbps_bucket', { le: '1' }), 1);
    assert.equal(sample(text, 'clouddesk_viewer_bandwidth_kbps_bucket', { le: '2000' }), 2);
    assert.equal(sample(text, 'clouddesk_viewer_rtt_seconds_bucket', { le: '0.025' }), 1);
    assert.equal(sample(text, 'clouddesk_rate_limit_rejections_total', { limit: 'sign-in-pair' }), 2);
    assert.equal(sample(text, 'clouddesk_errors_total', { code: 'HOST_KEY_MISMATCH' }), 1);
    assert.equal(sample(text, 'clouddesk_ws_closes_total', { code: '1006' }), 2);
    assert.equal(sample(text, 'clouddesk_ws_closes_total', { code: '4001', worker: '3' }), 1);
    assert.equal(sample(text, 'clouddesk_viewer_connects_total', { kind: 'reconnect' }), 1);
  });

  void it("reports event-loop lag beyond the monitor's 10 ms sampling interval, never below 0", async () => {
    // What monitorEventLoopDelay hands over, in ns: an idle tick reads 10.1 ms, one a bit early 9.99 ms.
    const samples = { p50: 10_100_000, p99: 9_990_000, max: 37_000_000 };
    let resets = 0;
    const histogram: LoopDelayHistogram = {
      count: 1000,
      get max() {
        return samples.max;
      },
      percentile: (p: number) => (p === 50 ? samples.p50 : p === 99 ? samples.p99 : NaN),
      reset: () => void resets++,
      enable: () => true,
      disable: () => true,
    };
    const m = new Metrics({ worker: '0', node: 'n', processMetrics: false, loopDelay: histogram });
    after(() => m.close());
    assert.equal(LOOP_DELAY_RESOLUTION_MS, 10);

    let text = await m.render();
    assert.equal(sample(text, 'clouddesk_event_loop_lag_seconds', { stat: 'p50' }), 0.0001);
    assert.equal(sample(text, 'clouddesk_event_loop_lag_seconds', { stat: 'p99' }), 0, 'clamped at 0');
    assert.equal(sample(text, 'clouddesk_event_loop_lag_seconds', { stat: 'max' }), 0.027);
    assert.match(text, /# HELP clouddesk_event_loop_lag_seconds .*beyond .*10 ms/);
    // The same reading under the per-role name (one process = one `gateway` loop by default).
    assert.equal(sample(text, 'clouddesk_event_loop_delay_seconds', { role: 'gateway', stat: 'max' }), 0.027);
    assert.equal(sample(text, 'clouddesk_event_loop_delay_seconds', { role: 'gateway', stat: 'p99' }), 0);
    assert.equal(resets, 1, 'each scrape covers the time since the previous one');

    samples.p99 = 110_000_000;
    text = await m.render();
    assert.equal(sample(text, 'clouddesk_event_loop_lag_seconds', { stat: 'p99' }), 0.1);
    assert.equal(sample(text, 'clouddesk_event_loop_delay_seconds', { role: 'gateway', stat: 'p99' }), 0.1);
    assert.equal(resets, 2);
  });

  void it('labels the loop with its role, and counts long tasks by kind', async () => {
    const m = new Metrics({ worker: '0', node: 'n', processMetrics: false, role: 'relay' });
    after(() => m.close());
    m.longTasks([
      { kind: 'sqlite', ms: 40 },
      { kind: 'sqlite', ms: 60 },
      { kind: 'json', ms: 25 },
    ]);
    const text = await m.render();
    assert.equal(sample(text, 'clouddesk_event_loop_long_tasks_total', { role: 'relay', kind: 'sqlite' }), 2);
    assert.equal(
      sample(text, 'clouddesk_event_loop_long_task_seconds_total', { role: 'relay', kind: 'sqlite' }),
      0.1,
    );
    assert.equal(sample(text, 'clouddesk_event_loop_long_tasks_total', { role: 'relay', kind: 'json' }), 1);
  });
});

void describe('serving /metrics', () => {
  void it('on the app: only with the token; HTTP requests are labelled by route template', async () => {
    const m = new Metrics({ worker: '0', node: 'n', processMetrics: false });
    const app = Fastify();
    after(async () => {
      await app.close();
      m.close();
    });
    registerHttpMetrics(app, m);
    registerMetricsRoute(app, {
      render: () => m.render(),
      contentType: m.contentType,
      token: 's3cret-token',
    });
    app.get('/api/things/:id', () => ({ data: 'x' }));
    await app.inject({ method: 'GET', url: '/api/things/1234' });
    await app.inject({ method: 'GET', url: '/api/things/5678' });
    await app.inject({ method: 'GET', url: '/nope' });

    assert.equal((await app.inject({ method: 'GET', url: '/metrics' })).statusCode, 401);
    const wrong = await app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: 'Bearer s3cret-tokeN' },
    });
    assert.equal(wrong.statusCode, 401);
    const ok = await app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: 'Bearer s3cret-token' },
    });
    assert.equal(ok.statusCode, 200);
    assert.match(String(ok.headers['content-type']), /^text\/plain/);
    const count = 'clouddesk_http_request_duration_seconds_count';
    assert.equal(sample(ok.body, count, { route: '/api/things/:id', status: '200', method: 'GET' }), 2);
    assert.equal(sample(ok.body, count, { route: 'unmatched', status: '404' }), 1);
    assert.doesNotMatch(ok.body, /1234/);
  });

  void it('on its own port, with or without a token', async () => {
    const m = new Metrics({ worker: '0', node: 'n', processMetrics: false });
    after(() => m.close());
    const open = await startMetricsServer(
      { render: () => m.render(), contentType: m.contentType, token: null },
      { host: '127.0.0.1', port: 0 },
    );
    const guarded = await startMetricsServer(
      { render: () => m.render(), contentType: m.contentType, token: 'tok' },
      { host: '127.0.0.1', port: 0 },
    );
    after(() => Promise.all([open.close(), guarded.close()]));
    const res = await fetch(`http://127.0.0.1:${open.port}/metrics`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /clouddesk_viewers_live/);
    assert.equal((await fetch(`http://127.0.0.1:${open.port}/other`)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${guarded.port}/metrics`)).status, 401);
    const authed = await fetch(`http://127.0.0.1:${guarded.port}/metrics`, {
      headers: { authorization: 'Bearer tok' },
    });
    assert.equal(authed.status, 200);
    await authed.text();
  });

  void it('exposeMetrics follows config: token route, own port, or nothing in a cluster worker', async () => {
    const m = new Metrics({ worker: '0', node: 'n', processMetrics: false });
    const app = Fastify();
    const worker = Fastify();
    const none = Fastify();
    const server = await exposeMetrics(app, m, {
      token: 'tok',
      port: 0,
      host: '127.0.0.1',
      clusterWorker: false,
    });
    assert.equal(
      await exposeMetrics(worker, m, { token: 'tok', port: 0, host: '127.0.0.1', clusterWorker: true }),
      null,
    );
    assert.equal(
      await exposeMetrics(none, m, { token: null, port: null, host: '127.0.0.1', clusterWorker: false }),
      null,
    );
    after(async () => {
      await Promise.all([server?.close(), app.close(), worker.close(), none.close()]);
      m.close();
    });
    assert.ok(server);
    const headers = { authorization: 'Bearer tok' };
    assert.equal((await app.inject({ method: 'GET', url: '/metrics', headers })).statusCode, 200);
    assert.equal((await worker.inject({ method: 'GET', url: '/metrics', headers })).statusCode, 404);
    assert.equal((await none.inject({ method: 'GET', url: '/metrics' })).statusCode, 404);
    const res = await fetch(`http://127.0.0.1:${server.port}/metrics`, { headers });
    assert.equal(res.status, 200);
    await res.text();
  });
});
