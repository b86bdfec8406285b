// Download links: a browser starts a download by navigating to a URL, which carries no Authorization
// header, so the owner asks for a short-lived link bound to their user, the instance and the path.
// The token is an HMAC under a key derived from the access-token secret (domain-separated, so it can never
// pass as an access token) and reusable until it expires, so a browser can resume with Range.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { AppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';

export interface DownloadClaims {
  userId: string;
  instanceId: string;
  path: string;
}

export class DownloadLinks {
  private readonly key: Buffer;

  constructor(
    secret: string,
    private readonly ttlMs: number,
    private readonly clock: Clock,
  ) {
    this.key = createHmac('sha256', secret).update('clouddesk file download link v1').digest();
  }

  issue(claims: DownloadClaims): { token: string; expiresAt: number } {
    const expiresAt = this.clock.now() + this.ttlMs;
    const body = Buffer.from(
      JSON.stringify([claims.userId, claims.instanceId, claims.path, expiresAt]),
      'utf8',
    ).toString('base64url');
    return { token: `${body}.${this.sign(body)}`, expiresAt };
  }

  /** The claims of a valid, unexpired token for this instance and path; DOWNLOAD_LINK_INVALID otherwise. */
  verify(token: string, instanceId: string, path: string): DownloadClaims {
    const dot = token.indexOf('.');
    if (dot <= 0) throw new AppError('DOWNLOAD_LINK_INVALID');
    const body = token.slice(0, dot);
    const given = Buffer.from(token.slice(dot + 1), 'base64url');
    const expected = Buffer.from(this.sign(body), 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected))
      throw new AppError('DOWNLOAD_LINK_INVALID');
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
    } catch {
      throw new AppError('DOWNLOAD_LINK_INVALID');
    }
    if (!Array.isArray(parsed) || parsed.length !== 4) throw new AppError('DOWNLOAD_LINK_INVALID');
    const [userId, claimedInstance, claimedPath, expiresAt] = parsed as unknown[];
    if (
      typeof userId !== 'string' ||
      claimedInstance !== instanceId ||
      claimedPath !== path ||
      typeof expiresAt !== 'number' ||
      expiresAt <= this.clock.now()
    )
      throw new AppError('DOWNLOAD_LINK_INVALID');
    return { userId, instanceId, path };
  }

  private sign(body: string): string {
    return createHmac('sha256', this.key).update(body).digest('base64url');
  }
}
