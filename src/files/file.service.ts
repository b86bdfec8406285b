// Files on the owner's instance over SFTP (issue 12): list, streamed download with Range, streamed upload
// to a temporary name renamed into place, mkdir, rename, delete. It decides what each SFTP answer means
// (a plain FX_FAILURE on a write is a full disk when the filesystem says so), enforces the size limit and
// the transfers in flight per user, and reports every operation to FileEvents. The SFTP session is the
// adapter (sftp-session.ts); the byte pumps are file-transfer.ts.
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { AppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { InstanceService } from '../instances/instance.service.js';
import type { InstanceRow } from '../store/instance.repository.js';
import type { SshPool } from '../ssh/ssh-pool.js';
import { decideRange, etagOf, lastModifiedOf } from './byte-range.js';
import type { FileEventDetails, FileEvents, FileEventType, FileOutcome } from './file-events.js';
import { SftpReadStream, writeBody, type UploadProgress } from './file-transfer.js';
import { SftpSession, isFailureStatus, toFileError, type EntryType } from './sftp-session.js';

export interface FileServiceOptions {
  maxBytes: number;
  transfersPerUser: number;
  windowBytes: number;
  /** Entries one listing returns at most (`truncated: true` past it). */
  listMaxEntries?: number;
}

export interface FileEntry {
  name: string;
  path: string;
  type: EntryType;
  /** For a symlink: what it points to ('directory', 'file', …), or null when it dangles. */
  targetType?: EntryType | null;
  size: number;
  mtime: string;
  mode: number;
}

export interface Listing {
  path: string;
  parent: string | null;
  entries: FileEntry[];
  truncated: boolean;
}

export interface Download {
  status: 200 | 206;
  headers: Record<string, string>;
  stream: Readable;
  /** Call once the response is over (finished or closed): frees the transfer and reports it. */
  settle(): void;
}

const DEFAULT_LIST_MAX = 10_000;
const UPLOAD_MODE = 0o644;

/** The last path segment, for events and Content-Disposition. */
export function baseName(path: string): string {
  const trimmed = path.replace(/\/+$/, '');
  return posix.basename(trimmed === '' ? '/' : trimmed);
}

function checkPath(path: string): void {
  if (path.length === 0 || path.length > 4096 || path.includes('\0'))
    throw new AppError('PATH_INVALID', { message: 'A path must be 1-4096 characters without NUL' });
}

export class FileService {
  private readonly inFlight = new Map<string, number>();
  private readonly listMax: number;

  constructor(
    private readonly deps: {
      instances: Pick<InstanceService, 'getRow' | 'target' | 'pinHostKey'>;
      pool: Pick<SshPool, 'openSftp'>;
      events: FileEvents;
      clock: Clock;
    },
    private readonly opts: FileServiceOptions,
  ) {
    this.listMax = opts.listMaxEntries ?? DEFAULT_LIST_MAX;
  }

  /** Transfers in flight now, per user (for tests and health). */
  transfersInFlight(userId: string): number {
    return this.inFlight.get(userId) ?? 0;
  }

  /** INSTANCE_NOT_FOUND unless the instance is the user's. */
  async checkOwner(userId: string, instanceId: string): Promise<void> {
    await this.deps.instances.getRow(userId, instanceId);
  }

  async list(userId: string, instanceId: string, path: string | undefined): Promise<Listing> {
    if (path !== undefined) checkPath(path);
    return this.withSession(userId, instanceId, async (s) => {
      const dir = await s.realpath(path ?? '.');
      const st = await s.stat(dir);
      if (st.type !== 'directory') throw new AppError('NOT_A_DIRECTORY');
      const { entries, truncated } = await s.list(dir, this.listMax);
      const out: FileEntry[] = [];
      for (const e of entries) {
        const full = posix.join(dir, e.name);
        const entry: FileEntry = {
          name: e.name,
          path: full,
          type: e.stat.type,
          size: e.stat.size,
          mtime: new Date(e.stat.mtime * 1000).toISOString(),
          mode: e.stat.mode,
        };
        if (e.stat.type === 'symlink') {
          try {
            entry.targetType = (await s.stat(full)).type;
          } catch {
            entry.targetType = null;
          }
        }
        out.push(entry);
      }
      const isDir = (x: FileEntry) => x.type === 'directory' || x.targetType === 'directory';
      out.sort((a, b) => Number(isDir(b)) - Number(isDir(a)) || a.name.localeCompare(b.name));
      return { path: dir, parent: dir === '/' ? null : posix.dirname(dir), entries: out, truncated };
    });
  }

  async download(
    userId: string,
    instanceId: string,
    path: string,
    request: { range?: string; ifRange?: string },
  ): Promise<Download> {
    checkPath(path);
    const row = await this.deps.instances.getRow(userId, instanceId);
    const release = this.takeTransferSlot(userId);
    const started = this.deps.clock.now();
    const base = { userId, instanceId, path, name: baseName(path) };
    let session: SftpSession | null = null;
    let handle: Buffer | null = null;
    try {
      session = await this.open(row);
      const st = await session.stat(path);
      if (st.type === 'directory') throw new AppError('IS_A_DIRECTORY');
      if (st.type !== 'file') throw new AppError('PATH_INVALID', { message: 'Only regular files download' });
      if (st.size > this.opts.maxBytes) throw new AppError('FILE_TOO_LARGE');
      const etag = etagOf(st.size, st.mtime);
      const lastModified = lastModifiedOf(st.mtime);
      const range = decideRange(request.range, request.ifRange, st.size, etag, lastModified);
      if (range.kind === 'unsatisfiable')
        throw new AppError('RANGE_NOT_SATISFIABLE', { details: { size: st.size } });
      handle = await session.openForRead(path);
      const start = range.kind === 'partial' ? range.start : 0;
      const end = range.kind === 'partial' ? range.end : st.size - 1;
      const stream = new SftpReadStream(session, handle, start, end, this.opts.windowBytes);
      const headers: Record<string, string> = {
        'content-type': 'application/octet-stream',
        'content-length': String(end - start + 1),
        'content-disposition': contentDisposition(base.name),
        'accept-ranges': 'bytes',
        etag,
        'last-modified': lastModified,
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
      };
      if (range.kind === 'partial') headers['content-range'] = `bytes ${start}-${end}/${st.size}`;
      const s = session;
      const h = handle;
      let settled = false;
      stream.once('error', () => undefined);
      return {
        status: range.kind === 'partial' ? 206 : 200,
        headers,
        stream,
        settle: () => {
          if (settled) return;
          settled = true;
          // Every byte went to the response (it ends the response after the stream's end).
          const ok = stream.readableEnded && stream.bytesSent === end - start + 1;
          const error = stream.errored;
          const outcome: FileOutcome = ok ? 'ok' : error ? 'failed' : 'cancelled';
          stream.destroy();
          void s.closeHandle(h).finally(() => s.end());
          release();
          this.record('file.download', {
            ...base,
            outcome,
            ...(ok ? {} : { code: error ? toFileError(error).code : 'CLIENT_GONE' }),
            size: st.size,
            bytes: stream.bytesSent,
            durationMs: this.deps.clock.now() - started,
            peakHeldBytes: stream.peakHeldBytes,
          });
        },
      };
    } catch (e) {
      if (handle && session) await session.closeHandle(handle);
      session?.end();
      release();
      const err = toFileError(e);
      this.record('file.download', { ...base, outcome: 'failed', code: err.code });
      throw err;
    }
  }

  /**
   * Streams `body` into a hidden temporary file beside `path` and renames it into place once the instance
   * acknowledged every byte; a failed or cancelled upload removes the temporary file.
   */
  async upload(
    userId: string,
    instanceId: string,
    path: string,
    opts: { overwrite: boolean; contentLength: number | null; body: AsyncIterable<Buffer> },
  ): Promise<{ path: string; size: number }> {
    checkPath(path);
    const name = baseName(path);
    if (name === '' || name === '.' || name === '..' || name === '/' || path.endsWith('/'))
      throw new AppError('PATH_INVALID', { message: 'Upload to a file path, not a directory' });
    if (opts.contentLength !== null && opts.contentLength > this.opts.maxBytes)
      throw new AppError('FILE_TOO_LARGE');
    const row = await this.deps.instances.getRow(userId, instanceId);
    const release = this.takeTransferSlot(userId);
    const started = this.deps.clock.now();
    const base = { userId, instanceId, path, name };
    const progress: UploadProgress = { received: 0, written: 0, peakHeldBytes: 0 };
    let session: SftpSession | null = null;
    let handle: Buffer | null = null;
    let temp: string | null = null;
    try {
      session = await this.open(row);
      const existing = await session.lstatOrNull(path);
      if (existing?.type === 'directory') throw new AppError('IS_A_DIRECTORY');
      if (existing && !opts.overwrite) throw new AppError('FILE_EXISTS');
      const dir = posix.dirname(path);
      temp = posix.join(dir, `.${name}.clouddesk-upload-${randomBytes(6).toString('hex')}`);
      try {
        handle = await session.openNewForWrite(temp, existing?.type === 'file' ? existing.mode : UPLOAD_MODE);
      } catch (e) {
        temp = null;
        throw await this.refine(session, dir, e);
      }
      try {
        await writeBody(session, handle, opts.body, {
          windowBytes: this.opts.windowBytes,
          maxBytes: this.opts.maxBytes,
          progress,
        });
        if (opts.contentLength !== null && progress.received !== opts.contentLength)
          throw new AppError('UPLOAD_INCOMPLETE');
        const h = handle;
        handle = null;
        await session.closeHandleStrict(h);
      } catch (e) {
        throw await this.refine(session, dir, e);
      }
      try {
        await session.rename(temp, path, opts.overwrite);
      } catch (e) {
        if (isFailureStatus(e) && (await session.lstatOrNull(path))) throw new AppError('FILE_EXISTS');
        throw toFileError(e);
      }
      temp = null;
      this.record('file.upload', {
        ...base,
        outcome: 'ok',
        size: progress.received,
        bytes: progress.received,
        durationMs: this.deps.clock.now() - started,
        peakHeldBytes: progress.peakHeldBytes,
      });
      return { path: await session.realpath(path), size: progress.received };
    } catch (e) {
      const err = isClientGone(e) ? new AppError('UPLOAD_INCOMPLETE', { cause: e }) : toFileError(e);
      if (session) {
        if (handle) await session.closeHandle(handle);
        if (temp) await session.unlink(temp).catch(() => undefined);
      }
      this.record('file.upload', {
        ...base,
        outcome: err.code === 'UPLOAD_INCOMPLETE' ? 'cancelled' : 'failed',
        code: err.code,
        size: opts.contentLength ?? undefined,
        bytes: progress.written,
        durationMs: this.deps.clock.now() - started,
        peakHeldBytes: progress.peakHeldBytes,
      });
      throw err;
    } finally {
      session?.end();
      release();
    }
  }

  async mkdir(userId: string, instanceId: string, path: string): Promise<{ path: string }> {
    checkPath(path);
    return this.simple('file.mkdir', userId, instanceId, path, {}, async (s) => {
      try {
        await s.mkdir(path);
      } catch (e) {
        if (e instanceof AppError && e.code === 'SFTP_FAILED' && (await s.lstatOrNull(path)))
          throw new AppError('FILE_EXISTS');
        throw e;
      }
      return { path: await s.realpath(path) };
    });
  }

  async rename(
    userId: string,
    instanceId: string,
    from: string,
    to: string,
    overwrite: boolean,
  ): Promise<{ path: string }> {
    checkPath(from);
    checkPath(to);
    return this.simple('file.rename', userId, instanceId, from, { target: to }, async (s) => {
      await s.lstat(from);
      const existing = await s.lstatOrNull(to);
      if (existing && !overwrite) throw new AppError('FILE_EXISTS');
      try {
        await s.rename(from, to, overwrite);
      } catch (e) {
        if (isFailureStatus(e) && existing?.type === 'directory') throw new AppError('DIRECTORY_NOT_EMPTY');
        if (isFailureStatus(e) && (await s.lstatOrNull(to))) throw new AppError('FILE_EXISTS');
        throw toFileError(e);
      }
      return { path: await s.realpath(to) };
    });
  }

  /** Deletes a file, a symlink (not what it points to) or an empty directory. */
  async delete(userId: string, instanceId: string, path: string): Promise<void> {
    checkPath(path);
    await this.simple('file.delete', userId, instanceId, path, {}, async (s) => {
      const st = await s.lstat(path);
      if (st.type !== 'directory') return s.unlink(path);
      try {
        await s.rmdir(path);
      } catch (e) {
        if (isFailureStatus(e) && (await s.list(path, 1)).entries.length > 0)
          throw new AppError('DIRECTORY_NOT_EMPTY');
        throw toFileError(e);
      }
    });
  }

  // ---- helpers ----

  private async simple<T>(
    type: FileEventType,
    userId: string,
    instanceId: string,
    path: string,
    extra: Partial<FileEventDetails>,
    fn: (s: SftpSession) => Promise<T>,
  ): Promise<T> {
    const base = { userId, instanceId, path, name: baseName(path), ...extra };
    try {
      const result = await this.withSession(userId, instanceId, fn);
      this.record(type, { ...base, outcome: 'ok' });
      return result;
    } catch (e) {
      const err = toFileError(e);
      if (err.code !== 'INSTANCE_NOT_FOUND')
        this.record(type, { ...base, outcome: 'failed', code: err.code });
      throw err;
    }
  }

  private async withSession<T>(
    userId: string,
    instanceId: string,
    fn: (s: SftpSession) => Promise<T>,
  ): Promise<T> {
    const row = await this.deps.instances.getRow(userId, instanceId);
    const session = await this.open(row);
    try {
      return await fn(session);
    } finally {
      session.end();
    }
  }

  private async open(row: InstanceRow): Promise<SftpSession> {
    const target = await this.deps.instances.target(row);
    const { session, hostKeyFingerprint } = await SftpSession.open(this.deps.pool, target);
    if (row.host_key_fingerprint === null && hostKeyFingerprint !== '')
      await this.deps.instances.pinHostKey(row, hostKeyFingerprint);
    return session;
  }

  /** A plain FX_FAILURE while creating or writing a file is a full disk when the filesystem has no room. */
  private async refine(session: SftpSession, dir: string, e: unknown): Promise<AppError> {
    if (isClientGone(e)) return new AppError('UPLOAD_INCOMPLETE', { cause: e });
    if (!isFailureStatus(e)) return toFileError(e);
    const free = await session.freeBytes(dir);
    if (free !== null && free < 64 * 1024) return new AppError('DISK_FULL', { cause: e });
    return toFileError(e);
  }

  private takeTransferSlot(userId: string): () => void {
    const n = this.inFlight.get(userId) ?? 0;
    if (n >= this.opts.transfersPerUser)
      throw new AppError('TRANSFER_LIMIT_REACHED', { details: { retryAfterSeconds: 1 } });
    this.inFlight.set(userId, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.inFlight.get(userId) ?? 1) - 1;
      if (left <= 0) this.inFlight.delete(userId);
      else this.inFlight.set(userId, left);
    };
  }

  private record(type: FileEventType, details: FileEventDetails): void {
    this.deps.events.record(type, details);
  }
}

/** The request body ended early: the browser cancelled or went away. */
function isClientGone(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  const message = e instanceof Error ? e.message : '';
  return (
    code === 'ECONNRESET' ||
    code === 'ERR_STREAM_PREMATURE_CLOSE' ||
    code === 'ABORT_ERR' ||
    message === 'aborted'
  );
}

/** `attachment` with an ASCII fallback name and the exact name in RFC 5987 form. */
function contentDisposition(name: string): string {
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, '_') || 'download';
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}
