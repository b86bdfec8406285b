// A TCP forwarder process (forked by the soak, IPC attached) with one listener on a host address per
// upstream on 127.0.0.1. Redis, the sentinels and PostgreSQL's HAProxy listen on loopback only, and a
// gateway in its own network namespace (soak-stack.ts) reaches them through the forwarder on the host
// end of its "store" veth link, which is the link a partition cuts. The SSH path to the instance uses
// one too. A separate process keeps these bytes off the soak's own event loop, which runs the viewers.
//
// argv: the listen address, then upstream ports on 127.0.0.1.
// Answers { type: 'ready', ports: { [upstream]: listenPort } }.
import { createServer, connect, type Socket } from 'node:net';

const listenHost = process.argv[2] ?? '127.0.0.1';
const upstreams = process.argv.slice(3).map(Number);
const sockets = new Set<Socket>();

function pipe(client: Socket, port: number): void {
  const server = connect({ host: '127.0.0.1', port });
  for (const s of [client, server]) {
    sockets.add(s);
    s.setNoDelay(true);
    s.on('close', () => sockets.delete(s));
  }
  client.on('error', () => server.destroy());
  server.on('error', () => client.destroy());
  client.on('close', () => server.destroy());
  server.on('close', () => client.destroy());
  client.pipe(server);
  server.pipe(client);
}

async function main(): Promise<void> {
  const ports: Record<number, number> = {};
  for (const upstream of upstreams) {
    const listener = createServer((c) => pipe(c, upstream));
    await new Promise<void>((resolve) =>
      listener.listen({ host: listenHost, port: 0, backlog: 1024 }, resolve),
    );
    const a = listener.address();
    ports[upstream] = typeof a === 'object' && a !== null ? a.port : 0;
  }
  process.send?.({ type: 'ready', ports });
}

const stop = () => {
  for (const s of sockets) s.destroy();
  process.exit(0);
};
process.on('SIGTERM', stop);
// The soak going away (even by SIGKILL) closes the IPC channel: do not outlive it.
process.on('disconnect', stop);
void main();
