// The viewers of bench/micro/viewer-memory.ts, in a process of their own so their memory is not the
// gateway's: forked with IPC, it takes { type: 'open', urls } (WebSocket URLs with fresh tickets), opens
// each as the load generator's viewer does (subprotocol `binary`, RFB 3.8 handshake, noVNC's update
// requests), and answers { type: 'opened', ok, failed } once every one of them has its first screen update
// or has failed. The viewers then stay open and idle until the process is told { type: 'stop' }.
import WebSocket from 'ws';
import { BenchViewer } from '../load/bench-viewer.js';

const OPEN_AT_ONCE = 64;
const SETUP_TIMEOUT_MS = 60_000;

const open = new Set<WebSocket>();
const failures: Record<string, number> = {};

function openViewer(url: string, origin: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    let settled = false;
    const settle = (ok: boolean, why?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!ok) {
        failures[why ?? 'unknown'] = (failures[why ?? 'unknown'] ?? 0) + 1;
        ws.terminate();
      }
      resolve(ok);
    };
    const timer = setTimeout(() => settle(false, 'SETUP_TIMEOUT'), SETUP_TIMEOUT_MS);
    const ws = new WebSocket(url, ['binary'], { perMessageDeflate: false, headers: { Origin: origin } });
    const viewer = new BenchViewer({
      onFirstUpdate: () => settle(true),
      onEcho: () => undefined,
      onBarrier: () => undefined,
      onProtocolError: (reason) => settle(false, `RFB:${reason}`),
    });
    viewer.attach({
      send: (b) => ws.send(b),
      pause: () => ws.pause(),
      resume: () => ws.resume(),
      close: () => ws.close(1000),
    });
    ws.on('message', (data: Buffer) => viewer.onData(data));
    ws.on('unexpected-response', (_req, res) => settle(false, `WS_HTTP_${res.statusCode ?? 0}`));
    ws.on('error', (e) => settle(false, `WS_${(e as NodeJS.ErrnoException).code ?? 'ERROR'}`));
    ws.on('open', () => open.add(ws));
    ws.on('close', (code) => {
      open.delete(ws);
      if (settled) failures[`closed:${code}`] = (failures[`closed:${code}`] ?? 0) + 1;
      settle(false, `ws:${code}`);
    });
  });
}

async function openAll(urls: string[], origin: string): Promise<{ ok: number; failed: number }> {
  let next = 0;
  let ok = 0;
  let failed = 0;
  const lane = async () => {
    while (next < urls.length) {
      const url = urls[next++]!;
      if (await openViewer(url, origin)) ok++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(OPEN_AT_ONCE, urls.length) }, lane));
  return { ok, failed };
}

process.on('message', (m: { type?: string; urls?: string[]; origin?: string }) => {
  if (m.type === 'open') {
    void openAll(m.urls ?? [], m.origin ?? '').then((r) =>
      process.send?.({ type: 'opened', ...r, open: open.size, failures }),
    );
  } else if (m.type === 'stop') {
    for (const ws of open) ws.terminate();
    process.exit(0);
  }
});
// The harness going away (even by SIGKILL) closes the IPC channel: do not outlive it.
process.on('disconnect', () => process.exit(0));
process.send?.({ type: 'ready' });
