// The gateway's side of the byte count, pluggable: the relay's byte counter on the metrics port today
// (clouddesk_relay_bytes_total — gateway-wide, which is exact here because each setting's gateway serves
// one viewer), or the per-session usage the gateway records once issue 13's part 2 lands
// (GET /api/sessions/:id → bytesToViewer / bytesFromViewer).
import { scrapeMetrics } from '../stacks/clouddesk-stack.js';
import type { ByteSourceName } from './options.js';

export interface ByteCount {
  toViewer: number;
  fromViewer: number;
}

export interface GatewayByteSource {
  name: ByteSourceName;
  /** What it reads, for the report. */
  describe: string;
  read(): Promise<ByteCount>;
}

export function metricsByteSource(metricsUrl: string, token: string): GatewayByteSource {
  return {
    name: 'metrics',
    describe: 'the gateway’s relay byte counter (`clouddesk_relay_bytes_total` on `METRICS_PORT`)',
    read: async () => {
      const m = await scrapeMetrics(metricsUrl, token);
      if (m === null) throw new Error(`no metrics from ${metricsUrl}`);
      return {
        toViewer: m.raw['clouddesk_relay_bytes_total{direction="to_viewer"}'] ?? 0,
        fromViewer: m.raw['clouddesk_relay_bytes_total{direction="from_viewer"}'] ?? 0,
      };
    },
  };
}

/**
 * The session's own usage record. It is written with the batched activity (ACTIVITY_FLUSH_MS), so the
 * harness gives the gateway a short flush interval and reads after at least one flush.
 */
export function usageApiByteSource(
  baseUrl: string,
  sessionId: string,
  accessToken: () => Promise<string>,
  flushMs: number,
): GatewayByteSource {
  return {
    name: 'usage-api',
    describe: 'the session’s recorded usage (`GET /api/sessions/:id` → `bytesToViewer`, `bytesFromViewer`)',
    read: async () => {
      await new Promise((r) => setTimeout(r, flushMs * 2));
      const res = await fetch(`${baseUrl}/api/sessions/${encodeURIComponent(sessionId)}`, {
        headers: { authorization: `Bearer ${await accessToken()}` },
        signal: AbortSignal.timeout(10_000),
      });
      const body = (await res.json()) as { data?: { bytesToViewer?: unknown; bytesFromViewer?: unknown } };
      const { bytesToViewer, bytesFromViewer } = body.data ?? {};
      if (typeof bytesToViewer !== 'number' || typeof bytesFromViewer !== 'number')
        throw new Error('this gateway’s GET /api/sessions/:id has no bytesToViewer/bytesFromViewer yet');
      return { toViewer: bytesToViewer, fromViewer: bytesFromViewer };
    },
  };
}
