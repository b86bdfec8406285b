// A hidden tab costs nothing (issue 13): while the page is hidden the viewer stops asking for
// updates. noVNC asks for the next FramebufferUpdate after each one, and when the server offers
// TigerVNC's continuous updates it turns them on instead, so the server pushes frames unasked; noVNC
// never turns them off (core/rfb.js, "FIXME … if we add support for turning off continuous
// updates"). So while paused this drops noVNC's FramebufferUpdateRequests and sends
// EnableContinuousUpdates(off); on return it asks for one full (non-incremental) refresh and turns
// continuous updates back on if noVNC had them. It works on the outgoing messages: noVNC sends every
// message in a WebSocket send of its own (each RFB.messages.* ends with a flush), so a 10-byte send
// starting with 3 (FramebufferUpdateRequest) or 150 (EnableContinuousUpdates) is exactly one of them.

const FRAMEBUFFER_UPDATE_REQUEST = 3;
const ENABLE_CONTINUOUS_UPDATES = 150;
const MESSAGE_BYTES = 10;

export class UpdatePause {
  private pausedNow = false;
  private continuous = false;

  get paused(): boolean {
    return this.pausedNow;
  }

  /** Whether noVNC turned continuous updates on (seen going out). */
  get continuousUpdates(): boolean {
    return this.continuous;
  }

  /** For each message noVNC sends: false when it must not go out now. */
  allow(bytes: Uint8Array): boolean {
    if (bytes.byteLength !== MESSAGE_BYTES) return true;
    if (bytes[0] === ENABLE_CONTINUOUS_UPDATES) {
      this.continuous = bytes[1] !== 0;
      return !(this.pausedNow && this.continuous);
    }
    if (bytes[0] === FRAMEBUFFER_UPDATE_REQUEST) return !this.pausedNow;
    return true;
  }

  /** The page was hidden: the messages to send now (none when already paused). */
  pause(width: number, height: number): Uint8Array[] {
    if (this.pausedNow) return [];
    this.pausedNow = true;
    return this.continuous ? [enableContinuousUpdates(false, width, height)] : [];
  }

  /** The page is visible again: one full refresh, then continuous updates again if noVNC had them. */
  resume(width: number, height: number): Uint8Array[] {
    if (!this.pausedNow) return [];
    this.pausedNow = false;
    const out = [framebufferUpdateRequest(false, width, height)];
    if (this.continuous) out.push(enableContinuousUpdates(true, width, height));
    return out;
  }

  /** A new connection: noVNC negotiates everything again. */
  reset(): void {
    this.pausedNow = false;
    this.continuous = false;
  }
}

function message(type: number, flag: boolean, width: number, height: number): Uint8Array {
  const bytes = new Uint8Array(MESSAGE_BYTES);
  const view = new DataView(bytes.buffer);
  bytes[0] = type;
  bytes[1] = flag ? 1 : 0;
  view.setUint16(2, 0); // x
  view.setUint16(4, 0); // y
  view.setUint16(6, Math.min(Math.max(width, 0), 0xffff));
  view.setUint16(8, Math.min(Math.max(height, 0), 0xffff));
  return bytes;
}

export function framebufferUpdateRequest(incremental: boolean, width: number, height: number): Uint8Array {
  return message(FRAMEBUFFER_UPDATE_REQUEST, incremental, width, height);
}

export function enableContinuousUpdates(enable: boolean, width: number, height: number): Uint8Array {
  return message(ENABLE_CONTINUOUS_UPDATES, enable, width, height);
}
