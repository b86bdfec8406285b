// When the gateway has already authenticated to the VNC server itself (TCP transport with a
// per-session VNC password the browser never learns), it plays the server's part of the RFB
// handshake towards the viewer, offering only security type None (RFC 6143 §7.1–7.2). After that the
// viewer's ClientInit and everything else is piped through untouched.
import type { WebSocket, RawData } from 'ws';

const SERVER_VERSION = Buffer.from('RFB 003.008\n', 'latin1');
const SECURITY_NONE = 1;

export class RfbHandshakeError extends Error {}

/**
 * Runs the viewer-facing handshake on `ws`. Resolves with the bytes the viewer sent past the end
 * of the handshake (usually its ClientInit), which must be forwarded to the server first.
 */
export function serveViewerHandshake(ws: WebSocket, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    let state: 'version' | 'security' = 'version';
    let minor = 8;
    const timer = setTimeout(() => finish(new RfbHandshakeError('viewer handshake timed out')), timeoutMs);

    const finish = (err: Error | null, rest?: Buffer) => {
      clearTimeout(timer);
      ws.off('message', onMessage);
      ws.off('close', onClose);
      if (err) reject(err);
      else resolve(rest!);
    };
    const onClose = () => finish(new RfbHandshakeError('viewer left during the handshake'));

    const onMessage = (data: RawData, isBinary: boolean) => {
      if (!isBinary) return finish(new RfbHandshakeError('binary frames only'));
      buffered = Buffer.concat([buffered, data as Buffer]);
      if (buffered.length > 64) return finish(new RfbHandshakeError('viewer sent too much during the handshake'));
      if (state === 'version') {
        if (buffered.length < 12) return;
        const m = /^RFB 003\.(\d{3})\n$/.exec(buffered.subarray(0, 12).toString('latin1'));
        if (!m) return finish(new RfbHandshakeError('viewer sent no RFB version'));
        minor = Number(m[1]);
        buffered = buffered.subarray(12);
        if (minor < 7) {
          // RFB 3.3: the server names the security type; no SecurityResult for None.
          ws.send(u32(SECURITY_NONE));
          return finish(null, buffered);
        }
        ws.send(Buffer.from([1, SECURITY_NONE]));
        state = 'security';
      }
      if (buffered.length < 1) return;
      if (buffered[0] !== SECURITY_NONE) return finish(new RfbHandshakeError('viewer chose an unoffered security type'));
      buffered = buffered.subarray(1);
      // 3.8 sends SecurityResult even for None; 3.7 does not.
      if (minor >= 8) ws.send(u32(0));
      finish(null, buffered);
    };

    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.send(SERVER_VERSION);
  });
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
