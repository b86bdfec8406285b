// When the gateway has already authenticated to the VNC server itself (TCP transport with a
// per-session VNC password the browser never learns), it plays the server's part of the RFB
// handshake towards the viewer, offering only security type None (RFC 6143 §7.1–7.2). After that the
// viewer's ClientInit and everything else is piped through untouched.
//
// It is fed by the relay's own message handler (Relay.setPreamble), not by a listener of its own:
// ws can emit several messages in one tick, and a byte arriving between "handshake done" and "relay
// listening" must not be lost.

const SERVER_VERSION = Buffer.from('RFB 003.008\n', 'latin1');
const SECURITY_NONE = 1;
const MAX_HANDSHAKE_BYTES = 64;

export class RfbHandshakeError extends Error {}

export class ViewerHandshake {
  private buffered = Buffer.alloc(0);
  private state: 'version' | 'security' = 'version';
  private minor = 8;

  constructor(private readonly send: (bytes: Buffer) => void) {}

  /** Sends the server's version line; the viewer answers with its own. */
  start(): void {
    this.send(SERVER_VERSION);
  }

  /**
   * Takes bytes from the viewer. Returns null while the handshake goes on, or the bytes past its
   * end (usually the start of ClientInit, possibly empty) once done. Throws RfbHandshakeError.
   */
  feed(chunk: Buffer): Buffer | null {
    this.buffered = Buffer.concat([this.buffered, chunk]);
    if (this.buffered.length > MAX_HANDSHAKE_BYTES && this.state === 'version') {
      throw new RfbHandshakeError('viewer sent no RFB version');
    }
    if (this.state === 'version') {
      if (this.buffered.length < 12) return null;
      const m = /^RFB 003\.(\d{3})\n$/.exec(this.buffered.subarray(0, 12).toString('latin1'));
      if (!m) throw new RfbHandshakeError('viewer sent no RFB version');
      this.minor = Number(m[1]);
      this.buffered = this.buffered.subarray(12);
      if (this.minor < 7) {
        // RFB 3.3: the server names the security type; no SecurityResult for None.
        this.send(u32(SECURITY_NONE));
        return this.buffered;
      }
      this.send(Buffer.from([1, SECURITY_NONE]));
      this.state = 'security';
    }
    if (this.buffered.length < 1) return null;
    if (this.buffered[0] !== SECURITY_NONE)
      throw new RfbHandshakeError('viewer chose a security type not offered');
    // 3.8 sends SecurityResult even for None; 3.7 does not.
    if (this.minor >= 8) this.send(u32(0));
    return this.buffered.subarray(1);
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
