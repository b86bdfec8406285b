// The bare ws → ssh2 prototype (DESIGN.md: "A bare ws → ssh2 prototype: 4.0 and 2.5 CPU·s/GB"), run as
// its own process so the `bare` stack can measure it beside CloudDesk in one sitting: a `ws` server
// whose every WebSocket is piped into a direct-tcpip channel to the simulator, on ssh2 connections of at
// most `channelsPerConnection` channels each. Nothing else: no accounts, tickets, RFB parsing,
// budgets, backpressure or write coalescing — what a team's first relay looks like, and the floor for
// what the gateway's own work costs. It uses the installed ssh2, patches included.
//
// Started by bare-stack.ts with IPC: it receives { type: 'start', … } and answers { type: 'ready', port }.
import { Client, type ClientChannel } from 'ssh2';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';

interface StartMessage {
  type: 'start';
  sshPort: number;
  username: string;
  privateKey: string;
  vncPort: number;
  channelsPerConnection: number;
}

interface PooledConnection {
  ready: Promise<Client>;
  channels: number;
}

function isStart(m: unknown): m is StartMessage {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === 'start';
}

function serve(start: StartMessage): Promise<number> {
  let current: PooledConnection | null = null;
  const connection = (): PooledConnection => {
    if (current !== null && current.channels < start.channelsPerConnection) return current;
    const client = new Client();
    const pooled: PooledConnection = {
      channels: 0,
      ready: new Promise<Client>((resolve, reject) => {
        client.once('ready', () => resolve(client));
        client.once('error', reject);
      }),
    };
    client.on('error', () => undefined);
    client.connect({
      host: '127.0.0.1',
      port: start.sshPort,
      username: start.username,
      privateKey: start.privateKey,
      readyTimeout: 60_000,
    });
    current = pooled;
    return pooled;
  };

  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    perMessageDeflate: false,
    maxPayload: 1 << 20,
  });
  wss.on('connection', (ws: WebSocket) => {
    const pooled = connection();
    pooled.channels++;
    // What the viewer sends before the channel is open (an RFB client may speak first).
    const early: Buffer[] = [];
    let channel: ClientChannel | null = null;
    ws.on('message', (data: RawData) => {
      const bytes = data as Buffer;
      if (channel) channel.write(bytes);
      else early.push(bytes);
    });
    ws.on('error', () => undefined);
    ws.on('close', () => {
      pooled.channels--;
      channel?.close();
    });
    pooled.ready.then(
      (client) => {
        client.forwardOut('127.0.0.1', 0, '127.0.0.1', start.vncPort, (err, ch) => {
          if (err) {
            ws.close(1011);
            return;
          }
          if (ws.readyState !== ws.OPEN) {
            ch.close();
            return;
          }
          channel = ch;
          for (const b of early.splice(0)) ch.write(b);
          ch.on('data', (chunk: Buffer) => ws.send(chunk));
          ch.on('close', () => ws.close(1000));
          ch.on('error', () => undefined);
        });
      },
      () => ws.close(1011),
    );
  });
  return new Promise((resolve, reject) => {
    wss.once('listening', () => {
      const address = wss.address();
      resolve(typeof address === 'object' && address !== null ? address.port : 0);
    });
    wss.once('error', reject);
  });
}

process.on('message', (m: unknown) => {
  if (!isStart(m)) return;
  serve(m).then(
    (port) => process.send?.({ type: 'ready', port }),
    (e: unknown) => {
      process.stderr.write(`bare relay: ${String(e)}\n`);
      process.exit(1);
    },
  );
});
process.on('SIGTERM', () => process.exit(0));
