// Files over SFTP through the pooled SSH connection (issue 12), against a real OpenSSH sshd with
// `Subsystem sftp internal-sftp`: listing, streamed download with Range/If-Range resume and download
// links, streamed upload through a temporary name (overwrite, cancel, too large), mkdir/rename/delete,
// the error codes (no such file, permission denied, disk full on a 1 MiB tmpfs, is a directory, no SFTP
// subsystem), transfers in flight per user, another user's instance, and the per-transfer memory bound
// with a slow instance and a slow browser.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { listenTestGateway, newInstance, newUser, type TestGateway } from './helpers/builders.js';
import { startSshd, type SshdFixture } from './helpers/sshd.js';
import { startThrottleProxy } from './helpers/throttle-proxy.js';
import type { FileEventDetails, FileEvents, FileEventType } from '../src/files/file-events.js';

const execFileP = promisify(execFile);

const WINDOW = 256 * 1024;
const CHUNK = 64 * 1024;

/** FileEvents that keeps every event and lets a test wait for one. */
class RecordingEvents implements FileEvents {
  readonly events: { type: FileEventType; details: FileEventDetails }[] = [];
  private waiters: {
    match: (t: FileEventType, d: FileEventDetails) => boolean;
    resolve: (d: FileEventDetails) => void;
  }[] = [];
  record(type: FileEventType, details: FileEventDetails): void {
    this.events.push({ type, details });
    for (const w of [...this.waiters]) {
      if (w.match(type, details)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(details);
      }
    }
  }
  /** Resolves once `check` holds, looking again after every event. */
  until(check: () => boolean): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ match: () => check(), resolve: () => resolve() }));
  }
  next(type: FileEventType, path: string): Promise<FileEventDetails> {
    const seen = this.events.find((e) => e.type === type && e.details.path === path);
    if (seen) return Promise.resolve(seen.details);
    return new Promise((resolve) =>
      this.waiters.push({ match: (t, d) => t === type && d.path === path, resolve }),
    );
  }
}

type User = Awaited<ReturnType<typeof newUser>>;

describe('files over SFTP (sshd internal-sftp)', () => {
  let sshd: SshdFixture;
  let gw: TestGateway & { base: string };
  const events = new RecordingEvents();
  let owner: User;
  let instanceId: string;
  /** A folder of the test user's own for this run, as the instance user sees it (absolute). */
  let dir: string;
  let uid: number;

  before(async () => {
    sshd = await startSshd({ users: 1 });
    gw = await listenTestGateway(
      { FILE_TRANSFER_MAX_BYTES: String(64 * 1024 * 1024), FILE_TRANSFERS_PER_USER: '2' },
      { fileEvents: events },
    );
    owner = await newUser(gw);
    instanceId = (await newInstance(gw, owner, { host: sshd.host, port: sshd.port, user: sshd.users[0]! }))
      .id;
    const u = sshd.users[0]!;
    uid = u.uid;
    dir = join(u.home, `files-test-${randomBytes(4).toString('hex')}`);
    const res = await api('POST', `/files/mkdir`, { path: dir });
    assert.equal(res.statusCode, 201, res.body);
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    await gw?.cleanup();
    await sshd?.stop();
  });

  const api = (
    method: 'GET' | 'POST',
    suffix: string,
    payload?: unknown,
    user: User = owner,
    id = instanceId,
  ) =>
    gw.app.inject({
      method,
      url: `/api/instances/${id}${suffix}`,
      headers: user.auth,
      ...(payload === undefined ? {} : { payload: payload as Record<string, unknown> }),
    });

  const contentUrl = (path: string, extra: Record<string, string> = {}, id = instanceId) =>
    `/api/instances/${id}/files/content?${new URLSearchParams({ path, ...extra }).toString()}`;

  const upload = (path: string, body: Buffer, extra: Record<string, string> = {}, user: User = owner) =>
    gw.app.inject({
      method: 'PUT',
      url: contentUrl(path, extra),
      headers: { ...user.auth, 'content-type': 'application/octet-stream' },
      payload: body,
    });

  /** A real HTTP request, for streamed bodies and responses. */
  function rawRequest(
    method: string,
    url: string,
    headers: Record<string, string>,
  ): { req: ReturnType<typeof httpRequest>; response: Promise<IncomingMessage> } {
    const [host, port] = gw.base.split(':');
    const req = httpRequest({ host, port: Number(port), method, path: url, headers });
    const response = new Promise<IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
    });
    return { req, response };
  }

  const bodyOf = async (res: IncomingMessage): Promise<Buffer> => {
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  };

  const created = async (res: Promise<{ statusCode: number; body: string }>) => {
    const r = await res;
    assert.equal(r.statusCode, 201, r.body);
  };

  /** Resolves when the request can take more, or is gone. */
  const drained = (req: ReturnType<typeof httpRequest>) =>
    new Promise<void>((resolve) => {
      const done = () => {
        req.off('drain', done);
        req.off('close', done);
        resolve();
      };
      req.once('drain', done);
      req.once('close', done);
    });

  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  test('lists the home directory by default, and a folder with name, type, size, mtime and mode', async () => {
    const home = await api('GET', '/files');
    assert.equal(home.statusCode, 200, home.body);
    assert.equal(home.json().data.path, sshd.users[0]!.home);
    assert.ok(home.json().data.entries.some((e: { name: string }) => dir.endsWith(e.name)));

    const content = randomBytes(1000);
    await created(upload(`${dir}/list-me.bin`, content));
    assert.equal((await api('POST', '/files/mkdir', { path: `${dir}/sub` })).statusCode, 201);
    const res = await api('GET', `/files?path=${encodeURIComponent(dir)}`);
    assert.equal(res.statusCode, 200, res.body);
    const listing = res.json().data;
    assert.equal(listing.path, dir);
    assert.equal(listing.parent, sshd.users[0]!.home);
    const names = listing.entries.map((e: { name: string }) => e.name);
    assert.deepEqual(names.slice(0, 1), ['sub'], 'folders first');
    const file = listing.entries.find((e: { name: string }) => e.name === 'list-me.bin');
    assert.equal(file.type, 'file');
    assert.equal(file.size, 1000);
    assert.equal(file.mode, 0o644);
    assert.equal(file.path, `${dir}/list-me.bin`);
    assert.ok(Math.abs(Date.parse(file.mtime) - Date.now()) < 120_000);
    assert.equal(listing.entries.find((e: { name: string }) => e.name === 'sub').type, 'directory');
  });

  test('upload writes the exact bytes; without overwrite an existing file is refused, with it replaced', async () => {
    const path = `${dir}/up.bin`;
    const first = randomBytes(300_000);
    const res = await upload(path, first);
    assert.equal(res.statusCode, 201, res.body);
    assert.deepEqual(res.json().data, { path, size: first.length });
    assert.equal(sha(await readFile(path)), sha(first));
    assert.equal((await stat(path)).uid, uid, 'owned by the instance user');

    const again = await upload(path, randomBytes(10));
    assert.equal(again.statusCode, 409);
    assert.equal(again.json().error.code, 'FILE_EXISTS');
    assert.equal(sha(await readFile(path)), sha(first));

    const second = randomBytes(5000);
    await created(upload(path, second, { overwrite: 'true' }));
    assert.equal(sha(await readFile(path)), sha(second));
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.includes('clouddesk-upload')),
      [],
      'no temporary file left',
    );
    const ev = events.events.filter((e) => e.type === 'file.upload' && e.details.path === path);
    assert.deepEqual(
      ev.map((e) => [e.details.outcome, e.details.code ?? null, e.details.bytes]),
      [
        ['ok', null, first.length],
        ['failed', 'FILE_EXISTS', 0],
        ['ok', null, second.length],
      ],
    );
    assert.equal(ev[0]!.details.name, 'up.bin');
  });

  test('download streams with Content-Length and Content-Disposition; Range resumes, If-Range guards it', async () => {
    const path = `${dir}/naïve file.bin`;
    const content = randomBytes(1_000_000);
    await created(upload(path, content));

    const full = await gw.app.inject({ method: 'GET', url: contentUrl(path), headers: owner.auth });
    assert.equal(full.statusCode, 200);
    assert.equal(full.headers['content-length'], String(content.length));
    assert.equal(full.headers['accept-ranges'], 'bytes');
    assert.equal(
      full.headers['content-disposition'],
      `attachment; filename="na_ve file.bin"; filename*=UTF-8''na%C3%AFve%20file.bin`,
    );
    assert.equal(sha(full.rawPayload), sha(content));
    const etag = full.headers.etag as string;

    // Resume: the first 400,000 bytes, then the rest guarded by If-Range.
    const head = await gw.app.inject({
      method: 'GET',
      url: contentUrl(path),
      headers: { ...owner.auth, range: 'bytes=0-399999' },
    });
    assert.equal(head.statusCode, 206);
    assert.equal(head.headers['content-range'], `bytes 0-399999/${content.length}`);
    assert.equal(head.headers['content-length'], '400000');
    const rest = await gw.app.inject({
      method: 'GET',
      url: contentUrl(path),
      headers: { ...owner.auth, range: 'bytes=400000-', 'if-range': etag },
    });
    assert.equal(rest.statusCode, 206);
    assert.equal(rest.headers['content-range'], `bytes 400000-999999/${content.length}`);
    assert.equal(sha(Buffer.concat([head.rawPayload, rest.rawPayload])), sha(content));

    const suffix = await gw.app.inject({
      method: 'GET',
      url: contentUrl(path),
      headers: { ...owner.auth, range: 'bytes=-10' },
    });
    assert.equal(suffix.statusCode, 206);
    assert.deepEqual(suffix.rawPayload, content.subarray(content.length - 10));

    // The file changed since: If-Range no longer matches, so the whole new file comes back.
    const changed = randomBytes(2000);
    await created(upload(path, changed, { overwrite: 'true' }));
    const stale = await gw.app.inject({
      method: 'GET',
      url: contentUrl(path),
      headers: { ...owner.auth, range: 'bytes=400000-', 'if-range': etag },
    });
    assert.equal(stale.statusCode, 200);
    assert.equal(sha(stale.rawPayload), sha(changed));

    const beyond = await gw.app.inject({
      method: 'GET',
      url: contentUrl(path),
      headers: { ...owner.auth, range: 'bytes=5000-' },
    });
    assert.equal(beyond.statusCode, 416);
    assert.equal(beyond.json().error.code, 'RANGE_NOT_SATISFIABLE');

    const ok = events.events.filter(
      (e) => e.type === 'file.download' && e.details.path === path && e.details.outcome === 'ok',
    );
    assert.ok(
      ok.some((e) => e.details.bytes === 400_000 && e.details.size === 1_000_000),
      JSON.stringify(events.events.filter((e) => e.details.path === path)),
    );
  });

  test('a download link works without the bearer token, only for its path, and not when altered', async () => {
    const path = `${dir}/linked.txt`;
    await created(upload(path, Buffer.from('linked content')));
    const link = await api('POST', '/files/link', { path });
    assert.equal(link.statusCode, 200, link.body);
    const url = link.json().data.url as string;
    assert.match(url, new RegExp(`^/api/instances/${instanceId}/files/content\\?path=`));
    const res = await gw.app.inject({ method: 'GET', url });
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.body, 'linked content');

    const token = new URL(url, 'http://x').searchParams.get('token')!;
    const other = await gw.app.inject({ method: 'GET', url: contentUrl(`${dir}/up.bin`, { token }) });
    assert.equal(other.statusCode, 401);
    assert.equal(other.json().error.code, 'DOWNLOAD_LINK_INVALID');
    const altered = await gw.app.inject({ method: 'GET', url: contentUrl(path, { token: `${token}x` }) });
    assert.equal(altered.json().error.code, 'DOWNLOAD_LINK_INVALID');
  });

  test('mkdir, rename and delete; the codes for exists, not empty, no such file and directories', async () => {
    const a = `${dir}/ops-a`;
    assert.equal((await api('POST', '/files/mkdir', { path: a })).statusCode, 201);
    const dup = await api('POST', '/files/mkdir', { path: a });
    assert.equal(dup.statusCode, 409);
    assert.equal(dup.json().error.code, 'FILE_EXISTS');
    await created(upload(`${a}/f.txt`, Buffer.from('x')));

    const notEmpty = await api('POST', '/files/delete', { path: a });
    assert.equal(notEmpty.statusCode, 409);
    assert.equal(notEmpty.json().error.code, 'DIRECTORY_NOT_EMPTY');

    const isDir = await upload(a, Buffer.from('x'), { overwrite: 'true' });
    assert.equal(isDir.statusCode, 409);
    assert.equal(isDir.json().error.code, 'IS_A_DIRECTORY');
    const dlDir = await gw.app.inject({ method: 'GET', url: contentUrl(a), headers: owner.auth });
    assert.equal(dlDir.json().error.code, 'IS_A_DIRECTORY');
    const listFile = await api('GET', `/files?path=${encodeURIComponent(`${a}/f.txt`)}`);
    assert.equal(listFile.json().error.code, 'NOT_A_DIRECTORY');

    await created(upload(`${dir}/g.txt`, Buffer.from('g')));
    const clash = await api('POST', '/files/rename', { from: `${a}/f.txt`, to: `${dir}/g.txt` });
    assert.equal(clash.json().error.code, 'FILE_EXISTS');
    const moved = await api('POST', '/files/rename', {
      from: `${a}/f.txt`,
      to: `${dir}/g.txt`,
      overwrite: true,
    });
    assert.equal(moved.statusCode, 200, moved.body);
    assert.equal(await readFile(`${dir}/g.txt`, 'utf8'), 'x');

    assert.equal((await api('POST', '/files/delete', { path: a })).statusCode, 204);
    assert.equal((await api('POST', '/files/delete', { path: `${dir}/g.txt` })).statusCode, 204);
    const gone = await api('POST', '/files/delete', { path: `${dir}/g.txt` });
    assert.equal(gone.statusCode, 404);
    assert.equal(gone.json().error.code, 'FILE_NOT_FOUND');
    const missing = await gw.app.inject({
      method: 'GET',
      url: contentUrl(`${dir}/nope`),
      headers: owner.auth,
    });
    assert.equal(missing.json().error.code, 'FILE_NOT_FOUND');
    const nul = await api('GET', `/files?path=${encodeURIComponent('a\0b')}`);
    assert.equal(nul.json().error.code, 'PATH_INVALID');
  });

  test('permission denied gives PERMISSION_DENIED and leaves nothing behind', async () => {
    const up = await upload('/root/clouddesk-should-not-exist', Buffer.from('x'));
    assert.equal(up.statusCode, 403, up.body);
    assert.equal(up.json().error.code, 'PERMISSION_DENIED');
    const down = await gw.app.inject({ method: 'GET', url: contentUrl('/etc/shadow'), headers: owner.auth });
    assert.equal(down.statusCode, 403);
    assert.equal(down.json().error.code, 'PERMISSION_DENIED');
    const ro = `${dir}/read-only`;
    await mkdir(ro);
    await chown(ro, 0, 0);
    await chmod(ro, 0o755);
    const inRo = await upload(`${ro}/x`, Buffer.from('x'));
    assert.equal(inRo.json().error.code, 'PERMISSION_DENIED');
    assert.deepEqual(await readdir(ro), []);
  });

  test('a full disk (1 MiB tmpfs) gives DISK_FULL and no partial or temporary file', async () => {
    const mount = await mkdtemp(join(dir, 'full-'));
    await execFileP('mount', ['-t', 'tmpfs', '-o', `size=1m,mode=0777`, 'clouddesk-files-test', mount]);
    try {
      const res = await upload(`${mount}/big.bin`, randomBytes(3 * 1024 * 1024));
      assert.equal(res.statusCode, 507, res.body);
      assert.equal(res.json().error.code, 'DISK_FULL');
      assert.deepEqual(await readdir(mount), []);
      const ev = await events.next('file.upload', `${mount}/big.bin`);
      assert.equal(ev.outcome, 'failed');
      assert.equal(ev.code, 'DISK_FULL');
      // What fits still works.
      await created(upload(`${mount}/small.bin`, randomBytes(1000)));
    } finally {
      await execFileP('umount', [mount]);
    }
  });

  test("another user's instance answers 404 on every files route", async () => {
    const stranger = await newUser(gw);
    const checks = [
      await api('GET', '/files', undefined, stranger),
      await gw.app.inject({ method: 'GET', url: contentUrl(`${dir}/up.bin`), headers: stranger.auth }),
      await upload(`${dir}/intruder`, Buffer.from('x'), {}, stranger),
      await api('POST', '/files/mkdir', { path: `${dir}/intruder` }, stranger),
      await api('POST', '/files/rename', { from: `${dir}/up.bin`, to: `${dir}/x` }, stranger),
      await api('POST', '/files/delete', { path: `${dir}/up.bin` }, stranger),
      await api('POST', '/files/link', { path: `${dir}/up.bin` }, stranger),
    ];
    for (const res of checks) {
      assert.equal(res.statusCode, 404, res.body);
      assert.equal(res.json().error.code, 'INSTANCE_NOT_FOUND');
    }
    await assert.rejects(stat(`${dir}/intruder`));
    await stat(`${dir}/up.bin`);
  });

  test('a cancelled upload leaves no partial file under the real name nor a temporary one', async () => {
    const path = `${dir}/cancelled.bin`;
    const { req, response } = rawRequest('PUT', contentUrl(path), {
      ...owner.auth,
      'content-type': 'application/octet-stream',
      'content-length': String(32 * 1024 * 1024),
    });
    response.catch(() => undefined);
    req.on('error', () => undefined);
    // Send 4 MiB, wait until the instance has some of it (the temporary file grows), then go away.
    const part = randomBytes(CHUNK);
    for (let i = 0; i < 64; i++) if (!req.write(part)) await drained(req);
    for (;;) {
      const temp = (await readdir(dir)).find((n) => n.startsWith('.cancelled.bin.clouddesk-upload-'));
      if (temp && (await stat(join(dir, temp))).size > 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    req.destroy();
    const ev = await events.next('file.upload', path);
    assert.equal(ev.outcome, 'cancelled');
    assert.equal(ev.code, 'UPLOAD_INCOMPLETE');
    assert.ok(ev.bytes! > 0);
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.includes('cancelled')),
      [],
    );
    assert.equal(gw.files.transfersInFlight(owner.id), 0);
  });

  test('FILE_TRANSFER_MAX_BYTES refuses a declared size at once, and a chunked body past it', async () => {
    const { req, response } = rawRequest('PUT', contentUrl(`${dir}/huge.bin`), {
      ...owner.auth,
      'content-length': String(65 * 1024 * 1024),
    });
    req.on('error', () => undefined);
    req.flushHeaders();
    const res = await response;
    assert.equal(res.statusCode, 413);
    assert.equal(JSON.parse((await bodyOf(res)).toString()).error.code, 'FILE_TOO_LARGE');
    req.destroy();

    const chunked = rawRequest('PUT', contentUrl(`${dir}/huge2.bin`), { ...owner.auth });
    chunked.req.on('error', () => undefined);
    const part = randomBytes(1024 * 1024);
    const writing = (async () => {
      for (let i = 0; i < 70 && !chunked.req.destroyed; i++)
        if (!chunked.req.write(part)) await drained(chunked.req);
    })();
    const res2 = await chunked.response;
    assert.equal(res2.statusCode, 413);
    chunked.req.destroy();
    await writing;
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.includes('huge')),
      [],
    );
  });

  test('transfers in flight per user: past FILE_TRANSFERS_PER_USER a transfer is refused with 429', async () => {
    const path = `${dir}/held.bin`;
    // Larger than what loopback socket buffers take, so a download that is not read stays in flight.
    await created(upload(path, randomBytes(32 * 1024 * 1024)));
    const before = events.events.length;
    const held = [];
    for (let i = 0; i < 2; i++) {
      const r = rawRequest('GET', contentUrl(path), owner.auth);
      r.req.end();
      const res = await r.response;
      assert.equal(res.statusCode, 200);
      res.pause(); // a browser that stops reading keeps its transfer
      held.push({ r, res });
    }
    assert.equal(gw.files.transfersInFlight(owner.id), 2);
    const third = await gw.app.inject({ method: 'GET', url: contentUrl(path), headers: owner.auth });
    assert.equal(third.statusCode, 429);
    assert.equal(third.json().error.code, 'TRANSFER_LIMIT_REACHED');
    const other = await newUser(gw);
    const otherInstance = (
      await newInstance(gw, other, { host: sshd.host, port: sshd.port, user: sshd.users[0]! })
    ).id;
    const theirs = await gw.app.inject({
      method: 'GET',
      url: contentUrl(path, {}, otherInstance),
      headers: other.auth,
    });
    assert.equal(theirs.statusCode, 200, 'the limit is per user');
    for (const h of held) h.r.req.destroy();
    await events.until(
      () =>
        events.events
          .slice(before)
          .filter(
            (e) => e.type === 'file.download' && e.details.path === path && e.details.userId === owner.id,
          ).length === 2,
    );
    assert.equal(gw.files.transfersInFlight(owner.id), 0);
  });

  test('an instance without an SFTP subsystem answers SFTP_UNAVAILABLE', async () => {
    const bare = await startSshd({ users: 1, sftp: false });
    try {
      const id = (await newInstance(gw, owner, { host: bare.host, port: bare.port, user: bare.users[0]! }))
        .id;
      const res = await api('GET', '/files', undefined, owner, id);
      assert.equal(res.statusCode, 422, res.body);
      assert.equal(res.json().error.code, 'SFTP_UNAVAILABLE');
    } finally {
      await bare.stop();
    }
  });

  test('memory per transfer stays bounded with a slow instance (upload) and a slow browser (download)', async () => {
    const size = 16 * 1024 * 1024;
    const bound = WINDOW + CHUNK;
    // The instance takes 4 MB/s: the gateway must slow the browser down rather than buffer.
    const proxy = await startThrottleProxy(
      { host: sshd.host, port: sshd.port },
      { upBytesPerSecond: 4_000_000 },
    );
    try {
      const slow = (
        await newInstance(
          gw,
          owner,
          { host: sshd.host, port: proxy.port, user: sshd.users[0]! },
          { name: 'slow' },
        )
      ).id;
      const path = `${dir}/slow.bin`;
      const hash = createHash('sha256');
      const started = Date.now();
      const { req, response } = rawRequest('PUT', contentUrl(path, {}, slow), {
        ...owner.auth,
        'content-length': String(size),
      });
      for (let sent = 0; sent < size; sent += CHUNK) {
        const part = randomBytes(CHUNK);
        hash.update(part);
        if (!req.write(part)) await drained(req);
      }
      req.end();
      const res = await response;
      assert.equal(res.statusCode, 201, (await bodyOf(res)).toString());
      assert.equal(
        createHash('sha256')
          .update(await readFile(path))
          .digest('hex'),
        hash.digest('hex'),
      );
      const ev = await events.next('file.upload', path);
      assert.ok(ev.peakHeldBytes! <= bound, `upload held ${ev.peakHeldBytes} bytes, bound ${bound}`);
      assert.ok(ev.peakHeldBytes! >= CHUNK, 'the window was used');
      // The instance really was the bottleneck: the browser could not get ahead of it by more than buffers.
      assert.ok(Date.now() - started > 2_000, 'the upload took as long as the slow instance needed');

      // A browser that reads at 2 MB/s: reads from the instance follow it.
      const dl = rawRequest('GET', contentUrl(path), owner.auth);
      dl.req.end();
      const down = await dl.response;
      assert.equal(down.statusCode, 200);
      const got = createHash('sha256');
      let received = 0;
      await new Promise<void>((resolve, reject) => {
        down.on('data', (c: Buffer) => {
          got.update(c);
          received += c.length;
          down.pause();
          setTimeout(() => down.resume(), (c.length / 2_000_000) * 1000);
        });
        down.once('end', resolve);
        down.once('error', reject);
      });
      assert.equal(received, size);
      const dev = await events.next('file.download', path);
      assert.equal(dev.outcome, 'ok');
      assert.ok(dev.peakHeldBytes! <= bound + CHUNK, `download held ${dev.peakHeldBytes} bytes`);
    } finally {
      await proxy.close();
    }
  });
});
