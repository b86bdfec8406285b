// The SFTP adapter: one ssh2 SFTP session (the `sftp` subsystem on the pooled SSH connection, never a
// shell) behind promises, with its status codes turned into catalogue errors. Paths go to the SFTP server
// as data, exactly as given; relative ones are relative to the SSH user's home, as sftp(1) sees them.
import type { FileEntryWithStats, SFTPWrapper, Stats } from 'ssh2';
import { AppError } from '../errors/errors.js';
import type { SshPool, SshTarget } from '../ssh/ssh-pool.js';

// SSH_FX_* status codes (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks).
const FX_NO_SUCH_FILE = 2;
const FX_PERMISSION_DENIED = 3;
const FX_FAILURE = 4;
const FX_NO_CONNECTION = 6;
const FX_CONNECTION_LOST = 7;
const FX_OP_UNSUPPORTED = 8;

// open(2) flags as SFTP v3 spells them (SSH_FXF_*).
const FXF_READ = 0x01;
const FXF_WRITE = 0x02;
const FXF_CREAT = 0x08;
const FXF_EXCL = 0x20;

export type EntryType = 'file' | 'directory' | 'symlink' | 'other';

export interface RemoteStat {
  type: EntryType;
  size: number;
  /** Seconds since the epoch, as SFTP v3 carries it. */
  mtime: number;
  /** Permission bits (st_mode & 07777). */
  mode: number;
}

/** The SFTP status of a failure (SSH_FX_*), or null when it was not a status answer. */
export function sftpStatus(err: unknown): number | null {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : null;
}

/** A status answer as one of our errors. FX_FAILURE says nothing more; callers refine it where they can. */
export function toFileError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  switch (sftpStatus(err)) {
    case FX_NO_SUCH_FILE:
      return new AppError('FILE_NOT_FOUND', { cause: err });
    case FX_PERMISSION_DENIED:
      return new AppError('PERMISSION_DENIED', { cause: err });
    case FX_NO_CONNECTION:
    case FX_CONNECTION_LOST:
      return new AppError('SSH_UNREACHABLE', { cause: err });
    case FX_OP_UNSUPPORTED:
      return new AppError('SFTP_FAILED', {
        message: 'The SFTP server on the instance does not support this operation',
        cause: err,
      });
    case null:
    default: {
      const message = err instanceof Error ? err.message : '';
      // The channel went away under a request (connection dropped, session ended).
      if (/No response from server|Not connected|closed/i.test(message))
        return new AppError('SSH_UNREACHABLE', { message: 'The SSH connection was lost', cause: err });
      return new AppError('SFTP_FAILED', { cause: err });
    }
  }
}

export const isFailureStatus = (err: unknown): boolean => sftpStatus(err) === FX_FAILURE;

function typeOf(stats: Pick<Stats, 'isDirectory' | 'isFile' | 'isSymbolicLink'>): EntryType {
  if (stats.isDirectory()) return 'directory';
  if (stats.isFile()) return 'file';
  if (stats.isSymbolicLink()) return 'symlink';
  return 'other';
}

function toStat(stats: Stats): RemoteStat {
  return { type: typeOf(stats), size: stats.size, mtime: stats.mtime, mode: stats.mode & 0o7777 };
}

export class SftpSession {
  private ended = false;

  private constructor(private readonly sftp: SFTPWrapper) {}

  static async open(
    pool: Pick<SshPool, 'openSftp'>,
    target: SshTarget,
  ): Promise<{ session: SftpSession; hostKeyFingerprint: string }> {
    const { sftp, hostKeyFingerprint } = await pool.openSftp(target);
    return { session: new SftpSession(sftp), hostKeyFingerprint };
  }

  /** Ends the session and frees its channel slot. Safe to call more than once. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    try {
      this.sftp.end();
    } catch {
      // the channel is already gone
    }
  }

  private call<T>(fn: (cb: (err: Error | undefined | null, value: T) => void) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      try {
        fn((err, value) => (err ? reject(toFileError(err)) : resolve(value)));
      } catch (e) {
        reject(toFileError(e));
      }
    });
  }

  /** The same call, failing with the raw ssh2 error so the caller can look at its status. */
  private raw<T>(fn: (cb: (err: Error | undefined | null, value: T) => void) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      try {
        fn((err, value) => (err ? reject(err) : resolve(value)));
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  realpath(path: string): Promise<string> {
    return this.call((cb) => this.sftp.realpath(path, cb));
  }

  async stat(path: string): Promise<RemoteStat> {
    return toStat(await this.call<Stats>((cb) => this.sftp.stat(path, cb)));
  }

  async lstat(path: string): Promise<RemoteStat> {
    return toStat(await this.call<Stats>((cb) => this.sftp.lstat(path, cb)));
  }

  /** lstat, or null when nothing has that name. */
  async lstatOrNull(path: string): Promise<RemoteStat | null> {
    try {
      return await this.lstat(path);
    } catch (e) {
      if (e instanceof AppError && e.code === 'FILE_NOT_FOUND') return null;
      throw e;
    }
  }

  /** Reads a directory batch by batch, stopping after `max` entries. */
  async list(
    path: string,
    max: number,
  ): Promise<{ entries: { name: string; stat: RemoteStat }[]; truncated: boolean }> {
    const handle = await this.call<Buffer>((cb) => this.sftp.opendir(path, cb));
    const entries: { name: string; stat: RemoteStat }[] = [];
    let truncated = false;
    try {
      for (;;) {
        let batch: FileEntryWithStats[] | false;
        try {
          batch = await this.raw<FileEntryWithStats[] | false>((cb) => this.sftp.readdir(handle, cb));
        } catch (e) {
          if (sftpStatus(e) === 1) break; // SSH_FX_EOF
          throw toFileError(e);
        }
        if (batch === false || batch.length === 0) break;
        for (const entry of batch) {
          if (entry.filename === '.' || entry.filename === '..') continue;
          if (entries.length >= max) {
            truncated = true;
            break;
          }
          entries.push({ name: entry.filename, stat: toStat(entry.attrs) });
        }
        if (truncated) break;
      }
    } finally {
      await this.closeHandle(handle);
    }
    return { entries, truncated };
  }

  mkdir(path: string): Promise<void> {
    return this.call((cb) => this.sftp.mkdir(path, (err) => cb(err, undefined)));
  }

  rmdir(path: string): Promise<void> {
    return this.raw((cb) => this.sftp.rmdir(path, (err) => cb(err, undefined)));
  }

  unlink(path: string): Promise<void> {
    return this.call((cb) => this.sftp.unlink(path, (err) => cb(err, undefined)));
  }

  /**
   * SFTP v3 rename never replaces (OpenSSH links the new name and fails if it exists);
   * posix-rename@openssh.com replaces atomically. Raw errors: the caller refines FX_FAILURE.
   */
  rename(from: string, to: string, replace: boolean): Promise<void> {
    return this.raw((cb) => {
      if (replace) this.sftp.ext_openssh_rename(from, to, (err) => cb(err, undefined));
      else this.sftp.rename(from, to, (err) => cb(err, undefined));
    });
  }

  /** Free bytes for an unprivileged user on the filesystem of `path`, or null when the server cannot say. */
  async freeBytes(path: string): Promise<number | null> {
    try {
      // uint64 fields: numbers, or bigints when ssh2 is asked for them.
      const st = await this.raw<{ f_bavail: number | bigint; f_frsize: number | bigint }>((cb) =>
        this.sftp.ext_openssh_statvfs(path, cb as (err: Error | undefined, fsInfo: unknown) => void),
      );
      const free = Number(st.f_bavail) * Number(st.f_frsize);
      return Number.isFinite(free) ? free : null;
    } catch {
      return null;
    }
  }

  openForRead(path: string): Promise<Buffer> {
    return this.call((cb) => this.sftp.open(path, FXF_READ, cb));
  }

  /** Creates a new file (never one that exists) for writing. */
  openNewForWrite(path: string, mode: number): Promise<Buffer> {
    return this.raw((cb) => this.sftp.open(path, FXF_WRITE | FXF_CREAT | FXF_EXCL, { mode }, cb));
  }

  /** Reads up to `length` bytes at `position` into `into` at `offset`; 0 at the end of the file. */
  read(handle: Buffer, into: Buffer, offset: number, length: number, position: number): Promise<number> {
    return this.call((cb) =>
      this.sftp.read(handle, into, offset, length, position, (err, bytesRead) => cb(err, bytesRead)),
    );
  }

  /** Writes all of `data` at `position`; the raw error, so a full disk can be told apart. */
  write(handle: Buffer, data: Buffer, position: number): Promise<void> {
    return this.raw((cb) =>
      this.sftp.write(handle, data, 0, data.length, position, (err) => cb(err, undefined)),
    );
  }

  closeHandle(handle: Buffer): Promise<void> {
    return new Promise<void>((resolve) => {
      try {
        this.sftp.close(handle, () => resolve());
      } catch {
        resolve();
      }
    });
  }

  /** Closes a handle and reports a failure (a write the server could only fail on close). */
  closeHandleStrict(handle: Buffer): Promise<void> {
    return this.raw((cb) => this.sftp.close(handle, (err) => cb(err, undefined)));
  }
}
