// The soak's stand-in for one gateway's network path to Redis and PostgreSQL: a TCP forwarder process
// (forked by the soak, IPC attached) with one loopback listener per upstream (each sentinel, each Redis
// data server, PostgreSQL's HAProxy). The gateway reaches its stores only through it, so stopping this
// one process (SIGSTOP) cuts that gateway off from both stores, and only that gateway: connections stay
// open but no byte moves either way and new ones are never accepted, as a partition that drops packets
// would look to both ends; SIGCONT heals it and whatever the kernel buffered flows on. The gateway's SSH
// connections to the instance and its viewers behind HAProxy do not pass through here.
//
// argv: upstream ports on 127.0.0.1. Answers { type: 'ready', ports: { [upstream]: listenPort } }.
import { createServer, connect, type Socket } from 'node:net';

const upstreams = process.argv.slice(2).map(Number);
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
      listener.listen({ host: '127.0.0.1', port: 0, backlog: 1024 }, resolve),
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
