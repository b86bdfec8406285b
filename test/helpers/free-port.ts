// A free TCP port on loopback for a test server: bind 127.0.0.1:0, read the port the kernel chose, close.
// Another process can take the port between close and reuse, so servers that bind it must retry on
// EADDRINUSE (the sshd fixture does).
import { createServer } from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}
