// The harness's own SSH login to the instance, as the instance user (one ssh2 connection for a whole
// setting): runs the instance script's commands on the desktop the gateway started, and reads the
// lossless framebuffer from there. Everything it starts carries the sshd fixture's marker, so the
// fixture's stop() ends whatever a crashed run left behind.
import { createHash } from 'node:crypto';
import { Client } from 'ssh2';
import { INSTANCE_SCRIPT } from './instance-script.js';

export interface InstanceLogin {
  host: string;
  port: number;
  username: string;
  privateKey: string;
  hostKeyFingerprint: string;
}

export interface CommandResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Lines of `key=value` → a map (the instance script's way of answering). */
export function answers(stdout: Buffer): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of stdout.toString('utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq < 1) continue;
    const key = line.slice(0, eq);
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

const SAFE_ARG = /^[A-Za-z0-9._:+-]{1,64}$/;
const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

export class InstanceDriver {
  private constructor(private readonly client: Client) {}

  static connect(login: InstanceLogin, timeoutMs = 20_000): Promise<InstanceDriver> {
    return new Promise((resolve, reject) => {
      const client = new Client();
      client.once('ready', () => resolve(new InstanceDriver(client)));
      client.once('error', reject);
      client.connect({
        host: login.host,
        port: login.port,
        username: login.username,
        privateKey: login.privateKey,
        readyTimeout: timeoutMs,
        hostVerifier: (key: Buffer) =>
          `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}` ===
          login.hostKeyFingerprint,
      });
    });
  }

  /** One command of the instance script; its arguments are plain tokens, never text. */
  run(args: (string | number)[], timeoutMs = 120_000): Promise<CommandResult> {
    const words = args.map(String);
    for (const w of words) if (!SAFE_ARG.test(w)) throw new Error(`not a plain token: ${JSON.stringify(w)}`);
    return new Promise((resolve, reject) => {
      this.client.exec(`sh -s -- ${words.join(' ')}`, (err, channel) => {
        if (err) {
          reject(err);
          return;
        }
        const out: Buffer[] = [];
        let outBytes = 0;
        let stderr = '';
        const timer = setTimeout(() => {
          channel.close();
          reject(new Error(`instance command ${words.join(' ')} took over ${timeoutMs} ms`));
        }, timeoutMs);
        channel.on('data', (chunk: Buffer) => {
          outBytes += chunk.length;
          if (outBytes <= MAX_OUTPUT_BYTES) out.push(chunk);
        });
        channel.stderr.on('data', (chunk: Buffer) => {
          if (stderr.length < 16_384) stderr += chunk.toString('utf8');
        });
        channel.once('close', (code: number | null) => {
          clearTimeout(timer);
          resolve({ code, stdout: Buffer.concat(out), stderr });
        });
        channel.end(INSTANCE_SCRIPT);
      });
    });
  }

  /** Like run(), but a non-zero exit is an error carrying what the script said. */
  async must(args: (string | number)[], timeoutMs?: number): Promise<Map<string, string[]>> {
    const r = await this.run(args, timeoutMs);
    if (r.code !== 0) {
      throw new Error(
        `instance command ${args.join(' ')} failed (${r.code}): ${r.stderr.trim().slice(-2000) || r.stdout.toString('utf8').slice(-500)}`,
      );
    }
    return answers(r.stdout);
  }

  close(): void {
    this.client.end();
  }
}
