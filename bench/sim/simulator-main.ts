// Process entry of the desktop simulator, forked by the harness (IPC channel required). It serves:
// - a TCP port on loopback with one simulated desktop per connection (the "direct" floor and the
//   websockify + ssh -L peer connect here);
// - a control port on loopback where the fake `Xvnc` on the benchmark's sshd asks for a desktop on a
//   Unix socket: it sends `LISTEN <path> <uid> <gid> <octal mode>\n`, reads `OK\n`, and keeps the
//   connection open for as long as it lives; when that connection closes (Xvnc killed), the listener
//   goes and its socket file is removed.
// The harness asks for counters with { type: 'stats' } and ends it with { type: 'stop' } or SIGTERM.
import { createServer, type Socket } from 'node:net';
import { DesktopSimulator } from './desktop-simulator.js';
import { isProfileName, profiles } from './traffic-profile.js';

const profileName = process.argv[2] ?? 'office';
if (!isProfileName(profileName)) throw new Error(`unknown profile ${profileName}`);
const seed = Number(process.argv[3] ?? '1');

const sim = new DesktopSimulator({ profile: profiles[profileName], seed });
let unixListeners = 0;
let controlErrors = 0;

function serveControl(socket: Socket): void {
  let line = '';
  let release: (() => void) | null = null;
  socket.setEncoding('utf8');
  socket.on('error', () => undefined);
  socket.on('close', () => {
    if (release) {
      release();
      unixListeners--;
    }
  });
  socket.on('data', (chunk: string) => {
    if (release !== null || line.length > 4096) return;
    line += chunk;
    const nl = line.indexOf('\n');
    if (nl === -1) return;
    const [verb, path, uid, gid, mode] = line.slice(0, nl).trim().split(/\s+/);
    if (verb !== 'LISTEN' || !path || !path.startsWith('/')) {
      controlErrors++;
      socket.end('ERR bad request\n');
      return;
    }
    const owner = uid && gid ? { uid: Number(uid), gid: Number(gid) } : null;
    sim.listenUnix(path, owner, mode ? parseInt(mode, 8) : 0o600).then(
      (close) => {
        if (socket.destroyed) return close();
        release = close;
        unixListeners++;
        socket.write('OK\n');
      },
      (e: unknown) => {
        controlErrors++;
        socket.end(`ERR ${e instanceof Error ? e.message.replace(/\s+/g, ' ') : 'listen failed'}\n`);
      },
    );
  });
}

async function main(): Promise<void> {
  const tcpPort = await sim.listenTcp(0);
  const control = createServer(serveControl);
  await new Promise<void>((resolve) =>
    control.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve),
  );
  const a = control.address();
  const controlPort = typeof a === 'object' && a !== null ? a.port : 0;

  const stop = () => {
    sim.close();
    control.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The harness going away (even by SIGKILL) closes the IPC channel: do not outlive it.
  process.on('disconnect', stop);
  process.on('message', (m: { type?: string }) => {
    if (m.type === 'stats')
      process.send?.({ type: 'stats', stats: { ...sim.stats(), unixListeners, controlErrors } });
    else if (m.type === 'stop') stop();
  });
  process.send?.({ type: 'ready', tcpPort, controlPort });
}

void main();
