// A 200 MB upload over SFTP while the same user's desktop streams through the same pooled SSH connection
// (issue 12): a real gateway process, sshd with internal-sftp, TigerVNC + openbox. The file arrives with
// the same SHA-256, the gateway's peak RSS (VmHWM) stays far below the file's size, and the desktop keeps
// answering: every echo (a small non-incremental FramebufferUpdateRequest and its update) comes back
// during the upload. The figures (throughput, echo before/during, RSS) are printed for docs/files.md,
// never asserted as speeds.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { startSshd, type SshdFixture } from './helpers/sshd.js';
import { startGatewayProcess, type GatewayProcess } from './helpers/gateway-process.js';
import { RfbTestClient } from './helpers/rfb-client.js';

const SIZE = 200 * 1024 * 1024;
const CHUNK = 64 * 1024;

async function procStatus(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  assert.ok(m, `${field} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs), so the peak is this phase's own. */
async function resetPeak(pid: number): Promise<void> {
  await writeFile(`/proc/${pid}/clear_refs`, '5');
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.95)] ?? NaN;

describe('a 200 MB upload while the desktop streams (gateway process, sshd, TigerVNC)', () => {
  let sshd: SshdFixture;
  let gateway: GatewayProcess;
  let token = '';
  let instanceId = '';
  let websocketUrl = '';
  let target = '';

  before(async () => {
    sshd = await startSshd({ users: 1 });
    gateway = await startGatewayProcess({ env: { DESKTOP_GEOMETRY: '1024x768' } });
    const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
      const res = await fetch(`${gateway.url}${path}`, {
        method,
        headers: {
          'content-type': 'application/json',
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
      return (JSON.parse(text) as { data: T }).data;
    };
    token = (
      await call<{ accessToken: string }>('POST', '/api/auth/register', {
        email: `big-${Date.now()}@example.com`,
        password: 'correct horse battery staple',
      })
    ).accessToken;
    const user = sshd.users[0]!;
    instanceId = (
      await call<{ id: string }>('POST', '/api/instances', {
        name: 'big upload',
        host: sshd.host,
        port: sshd.port,
        username: user.username,
        auth: { type: 'privateKey', privateKey: user.privateKey },
        hostKeyFingerprint: sshd.hostKeyFingerprint,
      })
    ).id;
    websocketUrl = (
      await call<{ websocketUrl: string }>('POST', '/api/sessions/connect', {
        instanceId,
        desktopEnvironment: 'openbox',
      })
    ).websocketUrl;
    target = join(user.home, `big-${randomBytes(4).toString('hex')}.bin`);
  });
  after(async () => {
    if (target) await rm(target, { force: true });
    await gateway?.stop();
    await sshd?.stop();
  });

  /** Streams `size` pseudo-random bytes as the body; resolves with the status and the sent bytes' hash. */
  function upload(path: string, size: number): Promise<{ status: number; body: string; sha: string }> {
    const url = new URL(gateway.url);
    const query = new URLSearchParams({ path, overwrite: 'true' }).toString();
    return new Promise((resolve, reject) => {
      const hash = createHash('sha256');
      const req = httpRequest({
        host: url.hostname,
        port: Number(url.port),
        method: 'PUT',
        path: `/api/instances/${instanceId}/files/content?${query}`,
        headers: { authorization: `Bearer ${token}`, 'content-length': String(size) },
      });
      req.once('error', reject);
      req.once('response', (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, body, sha: hash.digest('hex') }));
      });
      // One random block, varied per chunk by its index: cheap to make, never the same chunk twice.
      const block = randomBytes(CHUNK);
      let sent = 0;
      const pump = () => {
        while (sent < size) {
          const chunk = Buffer.from(block);
          chunk.writeUInt32BE(sent / CHUNK, 0);
          const part = chunk.subarray(0, Math.min(CHUNK, size - sent));
          hash.update(part);
          sent += part.length;
          if (!req.write(part)) {
            req.once('drain', pump);
            return;
          }
        }
        req.end();
      };
      pump();
    });
  }

  test(
    'checksum equal, gateway RSS bounded, the desktop answers every echo during the upload',
    { timeout: 600_000 },
    async () => {
      const viewer = await RfbTestClient.open(`ws://${new URL(gateway.url).host}${websocketUrl}`, {
        origin: gateway.url,
      });
      await viewer.handshake();
      viewer.requestUpdate(false);
      await viewer.readFramebufferUpdate();

      /** One echo: a 16×16 non-incremental update request and its answer, in ms. */
      const echo = async (): Promise<number> => {
        const msg = Buffer.alloc(10);
        msg[0] = 3;
        msg.writeUInt16BE(16, 6);
        msg.writeUInt16BE(16, 8);
        const t0 = performance.now();
        viewer.send(msg);
        const update = await viewer.readFramebufferUpdate();
        assert.ok(update.bytes >= 16 * 16 * 4);
        return performance.now() - t0;
      };
      const idle: number[] = [];
      for (let i = 0; i < 20; i++) idle.push(await echo());

      // Warm the gateway's SFTP path, then measure this phase's peak RSS from here.
      assert.equal((await upload(`${target}.warm`, 1024 * 1024)).status, 201);
      await rm(`${target}.warm`, { force: true });
      const pid = gateway.pid();
      await resetPeak(pid);
      const rssBefore = await procStatus(pid, 'VmRSS');

      const started = performance.now();
      let uploading = true;
      const result = upload(target, SIZE).finally(() => (uploading = false));
      const during: number[] = [];
      while (uploading) during.push(await echo());
      const { status, body, sha } = await result;
      const seconds = (performance.now() - started) / 1000;
      const peak = await procStatus(pid, 'VmHWM');
      assert.equal(status, 201, body);

      const remote = createHash('sha256');
      for await (const c of createReadStream(target)) remote.update(c as Buffer);
      assert.equal(remote.digest('hex'), sha, 'the file on the instance is the one sent');
      assert.ok(during.length >= 3, `echoes answered during the upload: ${during.length}`);
      assert.ok(
        peak - rssBefore < 100 * 1024 * 1024,
        `gateway peak RSS grew by ${Math.round((peak - rssBefore) / 1048576)} MiB for a 200 MiB upload`,
      );
      viewer.close();
      console.log(
        JSON.stringify({
          uploadMBps: +(SIZE / 1e6 / seconds).toFixed(1),
          seconds: +seconds.toFixed(1),
          rssBeforeMiB: +(rssBefore / 1048576).toFixed(1),
          peakRssMiB: +(peak / 1048576).toFixed(1),
          echoIdleMs: { median: +median(idle).toFixed(1), p95: +p95(idle).toFixed(1) },
          echoDuringMs: {
            n: during.length,
            median: +median(during).toFixed(1),
            p95: +p95(during).toFixed(1),
            max: +Math.max(...during).toFixed(1),
          },
        }),
      );
    },
  );
});
