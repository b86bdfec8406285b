// Test fixture: a TCP proxy on loopback that forwards to a target at a fixed rate in one or both
// directions — a slow instance (or a slow link) for tests of backpressure and memory bounds.
import { createConnection, createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface ThrottleProxy {
  port: number;
  /** Bytes forwarded client → target and target → client so far. */
  bytesUp: number;
  bytesDown: number;
  close(): Promise<void>;
}

/** Pipes `from` into `to` at most `bytesPerSecond` (0 = unthrottled), honouring `to`'s backpressure. */
function throttle(from: Socket, to: Socket, bytesPerSecond: number, count: (n: number) => void): void {
  from.on('data', (chunk: Buffer) => {
    count(chunk.length);
    const flowing = to.write(chunk);
    if (bytesPerSecond === 0 && flowing) return;
    from.pause();
    let waits = 0;
    const resume = () => {
      if (--waits === 0 && !from.destroyed) from.resume();
    };
    if (!flowing) {
      waits++;
      to.once('drain', resume);
    }
    if (bytesPerSecond > 0) {
      waits++;
      setTimeout(resume, (chunk.length / bytesPerSecond) * 1000);
    }
  });
  from.on('end', () => to.end());
}

export async function startThrottleProxy(
  target: { host: string; port: number },
  rates: { upBytesPerSecond?: number; downBytesPerSecond?: number },
): Promise<ThrottleProxy> {
  const sockets = new Set<Socket>();
  const proxy: ThrottleProxy = {
    port: 0,
    bytesUp: 0,
    bytesDown: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = createServer((client) => {
    const upstream = createConnection({ host: target.host, port: target.port });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    throttle(client, upstream, rates.upBytesPerSecond ?? 0, (n) => (proxy.bytesUp += n));
    throttle(upstream, client, rates.downBytesPerSecond ?? 0, (n) => (proxy.bytesDown += n));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  proxy.port = (server.address() as AddressInfo).port;
  return proxy;
}
