// VNC desktops on instances: finding TigerVNC and the desktop environments, choosing a free display,
// starting Xvnc + the desktop detached from the SSH channel, telling whether one still runs, stopping it
// with everything it spawned, and opening a byte stream to it. Everything happens over the SSH pool by
// running the constant script in remote-script.ts; the gateway only ever sends it values it produced.
//
// Transport: a per-desktop Unix socket (Xvnc -rfbunixpath, mode 0600, SecurityTypes None) reached with
// OpenSSH streamlocal forwarding — only the instance user can reach it and no password exists. Where the
// VNC server cannot do that (or `transport: 'tcp'` is configured), Xvnc listens on localhost:5900+N with a
// random per-desktop VNC password that the gateway answers itself (rfb-client-handshake.ts).
import { randomBytes, randomInt } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { DesktopTransport, DesktopWallpaper } from '../config/config.js';
import { AppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../observability/logger.js';
import type { SshPool, SshTarget, StreamOptions } from '../ssh/ssh-pool.js';
import {
  desktopEnvironmentIds,
  isDesktopEnvironmentId,
  type DesktopEnvironmentId,
} from './desktop-environments.js';
import { parseRemoteOutput, remoteCommand, remoteStdin } from './remote-script.js';
import { readRfbBanner, vncAuthenticate } from './rfb-client-handshake.js';

export type { DesktopEnvironmentId } from './desktop-environments.js';

export interface DesktopProbe {
  vncServer: { kind: 'tigervnc'; version: string | null; unixSocket: boolean } | null;
  desktopEnvironments: DesktopEnvironmentId[];
  /** The instance's host key as seen by this login ('SHA256:…'), for trust on first use. */
  hostKeyFingerprint: string;
}

export type DesktopHandle =
  | { display: number; transport: 'unix'; socketPath: string; pid: number }
  | { display: number; transport: 'tcp'; port: number; vncPassword: string; pid: number };

export interface StartedDesktop {
  handle: DesktopHandle;
  hostKeyFingerprint: string;
}

export interface DesktopStream {
  stream: Duplex;
  /** True when the gateway already did the RFB security handshake (tcp + VncAuth). */
  preauthenticated: boolean;
  /** The server's 12-byte version line, when preauthenticated. */
  serverVersion?: string;
}

export interface DesktopServiceOptions {
  displayMin: number;
  displayMax: number;
  transport: DesktopTransport;
  startTimeoutMs: number;
  geometry: string;
  /** Xvnc -FrameRate (DESKTOP_MAX_FPS); default 30. */
  maxFps?: number;
  /** DESKTOP_WALLPAPER; default 'plain'. */
  wallpaper?: DesktopWallpaper;
  /**
   * Colon-separated absolute folders to look for Xvnc and vncpasswd in, instead of the login's PATH
   * (plus /opt/TigerVNC/bin). For instances with TigerVNC in an unusual place — and for tests.
   */
  vncSearchPath?: string | null;
}

export interface DesktopServiceDeps {
  pool: Pick<SshPool, 'exec' | 'openUnixStream' | 'openTcpStream'>;
  logger: Logger;
  clock?: Clock;
  options: DesktopServiceOptions;
  /** Secret generator for the per-desktop VNC password (tcp transport): 8 of [A-Za-z0-9]. */
  newVncPassword?: () => string;
  /**
   * Cluster-wide reservation of one display on one instance while a start tries it (the plan's
   * `SET NX EX` port lock, moved to where a race remains): resolves to a release function, or null
   * when another gateway is starting a desktop on that display right now. Released as soon as the try
   * ends, whatever its outcome: a started desktop holds its display by its own X lock, which every
   * later start sees (and a start that raced it finds out on the instance and moves on).
   */
  reserveDisplay?: (target: SshTarget, display: number) => Promise<(() => Promise<void>) | null>;
}

/**
 * Free displays one inspection lists at most. The instance looks at displays until it has found this many, so a
 * start costs the displays it looks at rather than one check per desktop already running there.
 */
const FREE_CANDIDATES = 32;
/** Inspections one start makes at most when every display it was given turned out taken meanwhile. */
const MAX_INSPECTIONS = 4;
/** Attempts on further displays after Xvnc died at start for a reason other than a taken display. */
const MAX_XVNC_FAILURES = 3;
/** Bound on each liveness/readiness banner read (a start's reads also end at its own deadline). */
const BANNER_TIMEOUT_MS = 5_000;
/** Bound on the gateway's own VncAuth exchange. */
const AUTH_TIMEOUT_MS = 10_000;
/**
 * Of a start's remaining time, what the instance script does not wait for Xvnc: kept for the banner read
 * through SSH and for the script's answer to come back, so the whole start ends by its deadline.
 */
const START_RESERVE_MS = 1_000;
/** Bound on the cleanup of a start the gateway gave up on. */
const ABORT_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 30_000;

const geometryPattern = /^\d{2,5}x\d{2,5}$/;
const searchPathPattern = /^\/[A-Za-z0-9._/-]*(:\/[A-Za-z0-9._/-]*)*$/;
const socketPathPattern = /^\/[A-Za-z0-9._/-]+\.sock$/;
const passwordAlphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function generateVncPassword(): string {
  let out = '';
  for (let i = 0; i < 8; i++) out += passwordAlphabet[randomInt(passwordAlphabet.length)];
  return out;
}

/** The environment entry every process of a desktop carries; `stop` finds stragglers by it. */
export function desktopMarker(handle: Pick<DesktopHandle, 'display' | 'pid'>): string {
  return `CLOUDDESK_DESKTOP=${handle.display}-${handle.pid}`;
}

type StartOutcome =
  { kind: 'started'; started: StartedDesktop } | { kind: 'busy' } | { kind: 'xvnc-died'; logTail: string[] };

interface DisplayQuery {
  min: number;
  max: number;
  from: number;
  limit: number;
}

interface Inspection {
  probe: DesktopProbe;
  vncpasswd: boolean;
  setsid: boolean;
  free: number[];
}

export class DesktopService {
  private readonly pool: DesktopServiceDeps['pool'];
  private readonly logger: Logger;
  private readonly options: DesktopServiceOptions;
  private readonly newVncPassword: () => string;
  private readonly vncPath: string;
  private readonly maxFps: number;
  /** Displays a start in this process is trying right now, per instance: never hand one out twice. */
  private readonly starting = new Map<string, Set<number>>();
  private readonly reserveDisplay: NonNullable<DesktopServiceDeps['reserveDisplay']>;

  constructor(deps: DesktopServiceDeps) {
    this.pool = deps.pool;
    this.logger = deps.logger;
    this.options = deps.options;
    this.newVncPassword = deps.newVncPassword ?? generateVncPassword;
    this.reserveDisplay = deps.reserveDisplay ?? (() => Promise.resolve(() => Promise.resolve()));
    const { displayMin, displayMax, geometry, vncSearchPath } = deps.options;
    if (
      !Number.isInteger(displayMin) ||
      !Number.isInteger(displayMax) ||
      displayMin < 0 ||
      displayMax < displayMin
    ) {
      throw new Error('desktop displayMin/displayMax must be whole numbers with min <= max');
    }
    if (displayMax > 65535 - 5900) throw new Error('desktop displayMax is too large for a VNC port');
    if (!geometryPattern.test(geometry)) throw new Error('desktop geometry must look like 1280x800');
    if (vncSearchPath !== undefined && vncSearchPath !== null && !searchPathPattern.test(vncSearchPath)) {
      throw new Error('vncSearchPath must be colon-separated absolute folders');
    }
    this.vncPath = vncSearchPath ?? '-';
    this.maxFps = deps.options.maxFps ?? 30;
    if (!Number.isInteger(this.maxFps) || this.maxFps < 1 || this.maxFps > 120)
      throw new Error('desktop maxFps must be a whole number from 1 to 120');
  }

  /** Logs in and reports the VNC server and the desktop environments installed. */
  async probe(target: SshTarget): Promise<DesktopProbe> {
    return (await this.inspect(target, { min: 1, max: 0, from: 1, limit: 0 })).probe;
  }

  /**
   * Picks a free display in [displayMin, displayMax] on the instance, starts Xvnc + the desktop there,
   * waits until the RFB banner answers and returns the handle (and the host key this login saw).
   * This process never tries a display twice at once; `reserveDisplay` extends that to the cluster
   * (and a display taken anyway, e.g. by someone else on the instance, just moves on to the next).
   */
  async start(target: SshTarget, desktopEnvironment: DesktopEnvironmentId): Promise<StartedDesktop> {
    if (!isDesktopEnvironmentId(desktopEnvironment)) throw new AppError('DESKTOP_ENVIRONMENT_UNKNOWN');
    const deadline = performance.now() + this.options.startTimeoutMs;
    let info = await this.inspect(target, this.freeDisplayQuery());
    const vnc = info.probe.vncServer;
    if (!vnc) throw new AppError('VNC_SERVER_MISSING');
    if (!info.probe.desktopEnvironments.includes(desktopEnvironment)) {
      throw new AppError('DESKTOP_ENVIRONMENT_MISSING');
    }
    const transport =
      this.options.transport === 'auto' ? (vnc.unixSocket ? 'unix' : 'tcp') : this.options.transport;
    if (transport === 'unix' && !vnc.unixSocket) {
      throw new AppError('DESKTOP_START_FAILED', {
        message: 'The VNC server on the instance cannot listen on a Unix socket (TigerVNC 1.10 or newer can)',
      });
    }
    if (transport === 'tcp' && !info.vncpasswd) {
      throw new AppError('DESKTOP_START_FAILED', {
        message: 'vncpasswd is missing on the instance: install tigervnc-tools',
      });
    }
    if (!info.setsid) {
      throw new AppError('DESKTOP_START_FAILED', {
        message: 'setsid is missing on the instance (util-linux)',
      });
    }

    const key = `${target.host}\0${target.port}`;
    let reserved = this.starting.get(key);
    if (!reserved) this.starting.set(key, (reserved = new Set()));
    let xvncFailures = 0;
    let lastTail: string[] = [];
    try {
      for (let inspection = 1; ; inspection++) {
        for (const display of info.free) {
          if (reserved.has(display)) continue;
          if (xvncFailures >= MAX_XVNC_FAILURES) break;
          const remaining = deadline - performance.now();
          if (remaining <= 0) break;
          const outcome = await this.tryDisplay(
            target,
            reserved,
            display,
            desktopEnvironment,
            transport,
            remaining,
          );
          if (outcome.kind === 'started') return outcome.started;
          if (outcome.kind === 'xvnc-died') {
            xvncFailures++;
            lastTail = outcome.logTail;
          }
          // 'busy' (someone took it since we looked) or 'reserved' (another gateway is starting a desktop
          // there right now): try the next one.
        }
        // Every display listed was taken meanwhile (starts racing on a busy instance): when the list was
        // cut at its limit there are others to look at, from somewhere else in the range.
        const more = info.free.length >= FREE_CANDIDATES;
        if (!more || inspection >= MAX_INSPECTIONS || xvncFailures >= MAX_XVNC_FAILURES) break;
        if (performance.now() >= deadline) break;
        info = await this.inspect(target, this.freeDisplayQuery());
      }
    } finally {
      if (reserved.size === 0) this.starting.delete(key);
    }
    if (performance.now() >= deadline)
      throw this.startFailed('The desktop did not come up in time', lastTail, null);
    if (xvncFailures === 0) throw new AppError('NO_FREE_DISPLAY');
    throw this.startFailed('Xvnc did not start on the instance', lastTail, null);
  }

  /** One display: reserve it in this process and the cluster, then start there. */
  private async tryDisplay(
    target: SshTarget,
    reserved: Set<number>,
    display: number,
    desktopEnvironment: DesktopEnvironmentId,
    transport: 'unix' | 'tcp',
    remainingMs: number,
  ): Promise<StartOutcome | { kind: 'reserved' }> {
    reserved.add(display);
    let release: (() => Promise<void>) | null = null;
    try {
      release = await this.reserveDisplay(target, display);
      if (release === null) return { kind: 'reserved' };
      const outcome = await this.startOn(target, display, desktopEnvironment, transport, remainingMs);
      return outcome;
    } finally {
      reserved.delete(display);
      if (release) await release();
    }
  }

  /** True when that desktop still runs and its VNC server answers. SSH problems are thrown, not false. */
  async isAlive(target: SshTarget, handle: DesktopHandle): Promise<boolean> {
    checkHandle(handle);
    // A handle without a PID (a start that never finished) has nothing to ask about.
    if (handle.pid <= 1) return false;
    const res = await this.pool.exec(target, remoteCommand('alive', [handle.display, handle.pid]), {
      stdin: remoteStdin(null),
    });
    if (parseRemoteOutput(res.stdout).get('alive')?.[0] !== '1') return false;
    try {
      await this.readBanner(target, handle);
      return true;
    } catch (e) {
      if (e instanceof AppError && (e.code === 'SSH_CHANNEL_FAILED' || e.code === 'VNC_PROTOCOL_ERROR'))
        return false;
      throw e;
    }
  }

  /** Stops the desktop and every process it spawned, including daemons that left its process group. */
  async stop(target: SshTarget, handle: DesktopHandle): Promise<void> {
    checkHandle(handle);
    const res = await this.pool.exec(target, remoteCommand('stop', [handle.display, handle.pid]), {
      stdin: remoteStdin(null),
      timeoutMs: STOP_TIMEOUT_MS,
    });
    if (res.code !== 0) {
      const error = parseRemoteOutput(res.stdout).get('error')?.[0] ?? `exit ${String(res.code)}`;
      this.logger.warn({ display: handle.display, error }, 'desktop did not stop cleanly');
      throw new AppError('INTERNAL', { message: 'The desktop did not stop cleanly' });
    }
    this.logger.info({ host: target.host, display: handle.display }, 'desktop stopped');
  }

  /**
   * A byte stream to the VNC server. For 'tcp' the gateway has answered the VNC password and the stream
   * sits right after SecurityResult (the viewer's ClientInit goes next); for 'unix' it is the raw stream.
   */
  async openStream(
    target: SshTarget,
    handle: DesktopHandle,
    options: StreamOptions = {},
  ): Promise<DesktopStream> {
    checkHandle(handle);
    switch (handle.transport) {
      case 'unix': {
        const { channel } = await this.pool.openUnixStream(target, handle.socketPath, options);
        return { stream: channel, preauthenticated: false };
      }
      case 'tcp': {
        const { channel } = await this.pool.openTcpStream(target, '127.0.0.1', handle.port, options);
        try {
          const serverVersion = await vncAuthenticate(channel, handle.vncPassword, AUTH_TIMEOUT_MS);
          return { stream: channel, preauthenticated: true, serverVersion };
        } catch (e) {
          channel.close();
          throw e;
        }
      }
    }
  }

  // ---- internals ----

  /**
   * Which displays to ask the instance about: the whole range when it is small (lowest free first), else up to
   * FREE_CANDIDATES looked for from a random point, so concurrent starts on a busy instance rarely race for
   * the same displays and none re-checks every display that is taken.
   */
  private freeDisplayQuery(): DisplayQuery {
    const { displayMin: min, displayMax: max } = this.options;
    const from = max - min + 1 <= FREE_CANDIDATES ? min : randomInt(min, max + 1);
    return { min, max, from, limit: FREE_CANDIDATES };
  }

  private async inspect(target: SshTarget, q: DisplayQuery): Promise<Inspection> {
    const { min, max } = q;
    const res = await this.pool.exec(
      target,
      remoteCommand('probe', [min, max, this.vncPath, q.from, q.limit]),
      { stdin: remoteStdin(null) },
    );
    if (res.code !== 0) {
      this.logger.warn({ host: target.host, code: res.code }, 'desktop probe script failed');
      throw new AppError('DESKTOP_START_FAILED', { message: 'The instance could not be inspected' });
    }
    const out = parseRemoteOutput(res.stdout);
    const kind = out.get('xvnc')?.[0];
    const version = out.get('version')?.[0] ?? '';
    const vncServer =
      kind === 'tigervnc'
        ? {
            kind: 'tigervnc' as const,
            version: /^\d+(\.\d+)*$/.test(version) ? version : null,
            unixSocket: out.get('unix')?.[0] === '1',
          }
        : null;
    const found = new Set(out.get('de') ?? []);
    // In the order the instance found them (from `from`, wrapping), at most `limit`.
    const free = (out.get('free') ?? [])
      .map(Number)
      .filter((n) => Number.isInteger(n) && n >= min && n <= max)
      .slice(0, q.limit);
    return {
      probe: {
        vncServer,
        desktopEnvironments: desktopEnvironmentIds.filter((id) => found.has(id)),
        hostKeyFingerprint: res.hostKeyFingerprint,
      },
      vncpasswd: out.get('vncpasswd')?.[0] === '1',
      setsid: out.get('setsid')?.[0] === '1',
      free,
    };
  }

  private async startOn(
    target: SshTarget,
    display: number,
    desktopEnvironment: DesktopEnvironmentId,
    transport: 'unix' | 'tcp',
    remainingMs: number,
  ): Promise<StartOutcome> {
    const deadline = performance.now() + remainingMs;
    const vncPassword = transport === 'tcp' ? this.newVncPassword() : null;
    const token = randomBytes(12).toString('hex');
    const waitDeciseconds = Math.max(1, Math.floor((remainingMs - START_RESERVE_MS) / 100));
    let res;
    let timer: NodeJS.Timeout | undefined;
    try {
      const execution = this.pool.exec(
        target,
        remoteCommand('start', [
          display,
          desktopEnvironment,
          this.options.geometry,
          transport,
          this.vncPath,
          waitDeciseconds,
          token,
          this.maxFps,
          this.options.wallpaper ?? 'plain',
        ]),
        { stdin: remoteStdin(vncPassword), timeoutMs: Math.max(1, remainingMs) },
      );
      // The exec's own timer starts after the login: this one holds the start to its deadline.
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new AppError('SSH_TIMEOUT', { message: 'The desktop did not come up in time' })),
          Math.max(1, remainingMs),
        );
      });
      execution.catch(() => undefined);
      res = await Promise.race([execution, late]);
    } catch (e) {
      // Gave up (timeout, lost connection): the script may still bring a desktop up; stop it once it can be
      // found by the start's token, without holding up the answer.
      this.abort(target, display, token);
      if (e instanceof AppError && e.code === 'SSH_TIMEOUT')
        throw this.startFailed('The desktop did not come up in time', [], display);
      throw e;
    } finally {
      clearTimeout(timer);
    }
    const out = parseRemoteOutput(res.stdout);
    const logTail = sanitizeLog(out.get('log') ?? [], vncPassword);
    switch (res.code ?? -1) {
      case 0:
        break;
      case 10:
        throw new AppError('VNC_SERVER_MISSING');
      case 11:
        throw new AppError('DESKTOP_ENVIRONMENT_MISSING');
      case 12:
        this.logger.info({ host: target.host, display }, 'display taken meanwhile; trying the next one');
        return { kind: 'busy' };
      case 13:
        this.logger.warn(
          { host: target.host, display, logTail },
          'Xvnc died at start; trying the next display',
        );
        return { kind: 'xvnc-died', logTail };
      case 15:
        throw this.startFailed('The desktop did not come up in time', logTail, display);
      default:
        throw this.startFailed(
          `The desktop could not be started (${out.get('error')?.[0] ?? `exit ${String(res.code)}`})`,
          logTail,
          display,
        );
    }

    const pid = Number(out.get('pid')?.[0]);
    const socketPath = out.get('socket')?.[0] ?? '';
    const port = Number(out.get('port')?.[0]);
    if (!Number.isInteger(pid) || pid <= 1)
      throw this.startFailed('The start script gave no PID', logTail, display);
    let handle: DesktopHandle;
    if (transport === 'unix') {
      if (!socketPathPattern.test(socketPath) || Buffer.byteLength(socketPath) > 100) {
        throw this.startFailed('The start script gave no usable socket path', logTail, display);
      }
      handle = { display, transport: 'unix', socketPath, pid };
    } else {
      if (port !== 5900 + display)
        throw this.startFailed('The start script gave a wrong port', logTail, display);
      handle = { display, transport: 'tcp', port, vncPassword: vncPassword!, pid };
    }

    // Xvnc made its sockets; the desktop is ready when the RFB banner answers through SSH.
    try {
      await this.waitForBanner(target, handle, deadline);
    } catch (e) {
      // Stopped in the background: the answer is due at the deadline, the cleanup can come after it.
      void this.stop(target, handle).catch((err: unknown) =>
        this.logger.warn({ err, display }, 'could not clean up a desktop that did not answer'),
      );
      throw e instanceof AppError && e.code.startsWith('SSH_')
        ? e
        : this.startFailed('The VNC server did not answer', logTail, display);
    }
    this.logger.info({ host: target.host, display, transport, desktopEnvironment, pid }, 'desktop started');
    return { kind: 'started', started: { handle, hostKeyFingerprint: res.hostKeyFingerprint } };
  }

  /** Stops, in the background, what the start with this token started on the instance. */
  private abort(target: SshTarget, display: number, token: string): void {
    void this.pool
      .exec(target, remoteCommand('abort', [display, token]), {
        stdin: remoteStdin(null),
        timeoutMs: ABORT_TIMEOUT_MS,
      })
      .then(
        (res) => {
          if (res.code !== 0)
            this.logger.warn({ display, code: res.code }, 'an abandoned start left a desktop');
        },
        (err: unknown) => this.logger.warn({ err, display }, 'could not clean up an abandoned start'),
      );
  }

  private async waitForBanner(target: SshTarget, handle: DesktopHandle, deadline: number): Promise<void> {
    for (let delay = 50; ; delay = Math.min(delay * 2, 500)) {
      try {
        await this.readBanner(target, handle, Math.min(BANNER_TIMEOUT_MS, deadline - performance.now()));
        return;
      } catch (e) {
        const retriable =
          e instanceof AppError && (e.code === 'SSH_CHANNEL_FAILED' || e.code === 'VNC_PROTOCOL_ERROR');
        if (!retriable || performance.now() + delay >= deadline) throw e;
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  private async readBanner(
    target: SshTarget,
    handle: DesktopHandle,
    timeoutMs = BANNER_TIMEOUT_MS,
  ): Promise<string> {
    if (timeoutMs <= 0) throw new AppError('VNC_PROTOCOL_ERROR', { message: 'No time left for the banner' });
    const { channel } =
      handle.transport === 'unix'
        ? await this.pool.openUnixStream(target, handle.socketPath)
        : await this.pool.openTcpStream(target, '127.0.0.1', handle.port);
    try {
      return await readRfbBanner(channel, timeoutMs);
    } finally {
      channel.close();
    }
  }

  private startFailed(message: string, logTail: string[], display: number | null): AppError {
    this.logger.warn({ display, logTail }, message);
    return new AppError('DESKTOP_START_FAILED', { message, details: { display, logTail } });
  }
}

/** The desktop's log lines as safe text: no control characters, no password, bounded. */
function sanitizeLog(lines: string[], secret: string | null): string[] {
  return lines.slice(-40).map((line) => {
    let clean = line.replace(/[^\x20-\x7e]/g, '?').slice(0, 300);
    if (secret) clean = clean.split(secret).join('[redacted]');
    return clean;
  });
}

/** A handle may come back from the database: check it before its values go anywhere near a shell. */
function checkHandle(handle: DesktopHandle): void {
  const ok =
    Number.isInteger(handle.display) &&
    handle.display >= 0 &&
    handle.display <= 65535 - 5900 &&
    Number.isInteger(handle.pid) &&
    handle.pid >= 0 &&
    (handle.transport === 'unix'
      ? socketPathPattern.test(handle.socketPath)
      : Number.isInteger(handle.port) &&
        handle.port === 5900 + handle.display &&
        /^[A-Za-z0-9]{8}$/.test(handle.vncPassword));
  if (!ok) throw new AppError('VALIDATION_FAILED', { message: 'Invalid desktop handle' });
}
