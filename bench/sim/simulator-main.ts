// Process entry of the desktop simulator, forked by the harness (IPC channel required). It serves:
// - a TCP port on loopback with one simulated desktop per connection (the "direct" floor and the
//   websockify + ssh -L peer connect here);
// - a control port on loopback where the fake `Xvnc` on the benchmark's sshd asks for a desktop on a
//   Unix socket: it sends `LISTEN <path> <uid> <gid> <octal mode>\n`, reads `OK\n`, and keeps the
//   connection open for as long as it lives; when that connection closes (Xvnc killed), the listener
//   goes and its socket file is removed.
// - with `handoff` as its fourth argument, a Unix socket where the fake `Xvnc` hands over the RFB socket
//   it listens on itself (handoff-broker.py, a child of this process): the simulator then accepts on
//   that socket directly, so nothing relays between sshd and the simulated desktop, as nothing does
//   between sshd and a real Xvnc. Without it the fake Xvnc joins each connection to the TCP port with
//   socat: one more process and copy per viewer, and one descriptor fewer here (for 10,000 desktops
//   under the build machine's open-file limit).
// The harness asks for counters with { type: 'stats' } and ends it with { type: 'stop' } or SIGTERM.
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DesktopSimulator } from './desktop-simulator.js';
import { isProfileName, profiles } from './traffic-profile.js';

const profileName = process.argv[2] ?? 'office';
if (!isProfileName(profileName)) throw new Error(`unknown profile ${profileName}`);
const seed = Number(process.argv[3] ?? '1');
const handoff = process.argv[4] === 'handoff';

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

/**
 * Starts the hand-off broker; resolves with the path the fake Xvnc hands its listener to. Each listener
 * arrives as a net.Server whose connections the simulator serves, and is closed when its Xvnc is gone.
 */
async function startHandoff(): Promise<{ path: string; stop: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'clouddesk-bench-handoff-'));
  const path = join(dir, 'broker.sock');
  // The bench instances' users connect here: the folder must be theirs to enter (mkdtemp makes it 0700).
  chmodSync(dir, 0o755);
  const broker = spawn(
    'python3',
    ['-I', '-S', fileURLToPath(new URL('./handoff-broker.py', import.meta.url)), path],
    { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  );
  // Each listener with the connections it accepted: a desktop whose Xvnc is gone drops its viewers.
  const listeners = new Map<number, { server: Server; sockets: Set<Socket> }>();
  broker.on('message', (m: { type?: string; id?: number }, handle: unknown) => {
    if (m.type === 'listener' && typeof m.id === 'number' && handle !== undefined) {
      const entry = { server: handle as Server, sockets: new Set<Socket>() };
      entry.server.on('connection', (socket: Socket) => {
        entry.sockets.add(socket);
        socket.once('close', () => entry.sockets.delete(socket));
        sim.serve(socket);
      });
      entry.server.on('error', () => undefined);
      listeners.set(m.id, entry);
      unixListeners++;
    } else if (m.type === 'closed' && typeof m.id === 'number') {
      const entry = listeners.get(m.id);
      if (entry === undefined) return;
      listeners.delete(m.id);
      unixListeners--;
      entry.server.close();
      for (const socket of entry.sockets) socket.destroy();
    } else if (m.type !== 'ready') controlErrors++;
  });
  await new Promise<void>((resolve, reject) => {
    const onMessage = (m: { type?: string }) => {
      if (m.type !== 'ready') return;
      broker.off('message', onMessage);
      resolve();
    };
    broker.on('message', onMessage);
    broker.once('exit', (code) => reject(new Error(`the hand-off broker exited (${code}) before listening`)));
  });
  return {
    path,
    stop: () => {
      broker.kill();
      for (const { server } of listeners.values()) server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  const tcpPort = await sim.listenTcp(0);
  const brokered = handoff ? await startHandoff() : null;
  const control = createServer(serveControl);
  await new Promise<void>((resolve) =>
    control.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve),
  );
  const a = control.address();
  const controlPort = typeof a === 'object' && a !== null ? a.port : 0;

  const stop = () => {
    brokered?.stop();
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
  process.send?.({ type: 'ready', tcpPort, controlPort, handoffPath: brokered?.path ?? null });
}

void main();
