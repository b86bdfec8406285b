// Serves the built web client (web/dist) from the gateway's own origin: hashed assets cached for a
// year, index.html revalidated on every load, a strict Content-Security-Policy on the HTML, and the
// single-page-app fallback (any GET that is not /api or /vnc and does not name a file gets index.html,
// so /instances or /desktop/<id> survive a reload). If the client was not built, the gateway logs one
// line and serves the API only.
import { existsSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fastifyStatic from '@fastify/static';

interface LoggerLike {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface WebClientOptions {
  /** `PUBLIC_DIR`; null → `<repo>/web/dist`. */
  publicDir: string | null;
  logger: LoggerLike;
}

const IMMUTABLE = 'public, max-age=31536000, immutable';
const REVALIDATE = 'no-cache';

/**
 * `<repo>/web/dist`, found from this module's own location so it works both from the sources
 * (src/http/) and from the compiled gateway (dist/src/http/).
 */
export function defaultPublicDir(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const candidates = [resolve(here, '../../web/dist'), resolve(here, '../../../web/dist')];
  return candidates.find((dir) => existsSync(join(dir, 'index.html'))) ?? candidates[0]!;
}

/** Host header values we are willing to echo into the CSP (anything else: no explicit ws source). */
const safeHost = /^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/;

/**
 * The policy for the HTML page. No inline scripts or styles (noVNC and the client set styles through
 * the CSSOM, which CSP allows). `'self'` in connect-src covers same-origin ws:/wss: in current
 * browsers; the explicit ws/wss sources are for older ones.
 */
export function contentSecurityPolicy(host: string | undefined): string {
  const sockets = host !== undefined && safeHost.test(host) ? ` ws://${host} wss://${host}` : '';
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    `connect-src 'self'${sockets}`,
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

function htmlHeaders(request: FastifyRequest, reply: FastifyReply): void {
  void reply
    .header('Cache-Control', REVALIDATE)
    .header('Content-Security-Policy', contentSecurityPolicy(request.headers.host))
    .header('X-Content-Type-Options', 'nosniff')
    .header('Referrer-Policy', 'no-referrer')
    .header('X-Frame-Options', 'DENY')
    .header('Cross-Origin-Opener-Policy', 'same-origin');
}

/** Paths the SPA fallback must never answer with HTML. */
function isServerPath(url: string): boolean {
  return (
    url === '/api' ||
    url.startsWith('/api/') ||
    url === '/metrics' ||
    url.startsWith('/metrics?') ||
    url === '/vnc' ||
    url.startsWith('/vnc?') ||
    url.startsWith('/vnc/')
  );
}

/** `/assets/app-3f2a.js` → `assets/app-3f2a.js`; null for anything that could leave the folder. */
function safeRelativePath(pathname: string): string | null {
  let decoded: string;
  try {
    decoded = decodeURIComponent(pathname);
  } catch {
    return null;
  }
  if (decoded.includes('\\') || decoded.includes('\0')) return null;
  const parts = decoded.split('/').filter((p) => p !== '');
  if (parts.some((p) => p === '..' || p === '.')) return null;
  return parts.join('/');
}

/** `/assets/app-3f2a.js`, `/favicon.svg`: names a file, so a miss is a 404, not the app. */
function looksLikeFile(pathname: string): boolean {
  const last = pathname.slice(pathname.lastIndexOf('/') + 1);
  return last.includes('.');
}

/**
 * Registers the client's routes. Resolves to whether a built client was found. Call it after the API
 * routes; it adds a GET `/*` catch-all that defers to the app's not-found handler for /api, /vnc and
 * missing files.
 */
export async function registerWebClient(app: FastifyInstance, opts: WebClientOptions): Promise<boolean> {
  const root = resolve(opts.publicDir ?? defaultPublicDir());
  if (!existsSync(join(root, 'index.html'))) {
    opts.logger.warn(
      { publicDir: root },
      'web client not built; serving the API only (build it with: npm --prefix web ci && npm --prefix web run build)',
    );
    return false;
  }
  const assetsDir = join(root, 'assets') + sep;

  await app.register(fastifyStatic, {
    root,
    // No file routes of its own: the catch-all below serves files, so a client rebuilt while the
    // gateway runs (new hashed names) is served without a restart.
    serve: false,
    index: false,
    cacheControl: false,
    // Dotfiles answer 404 like any missing file.
    dotfiles: 'ignore',
    setHeaders(res, path) {
      res.setHeader('Cache-Control', path.startsWith(assetsDir) ? IMMUTABLE : REVALIDATE);
      res.setHeader('X-Content-Type-Options', 'nosniff');
    },
  });

  const sendIndex = (request: FastifyRequest, reply: FastifyReply) => {
    htmlHeaders(request, reply);
    return reply.sendFile('index.html', root);
  };

  // The page is served only through sendIndex, so it always carries the CSP.
  app.get('/', sendIndex);
  app.get('/index.html', sendIndex);
  app.get('/*', (request, reply) => {
    if (isServerPath(request.url)) return reply.callNotFound();
    const pathname = request.url.split('?')[0] ?? '/';
    if (!looksLikeFile(pathname)) return sendIndex(request, reply);
    const file = safeRelativePath(pathname);
    if (file === null) return reply.callNotFound();
    return reply.sendFile(file, root);
  });

  opts.logger.info({ publicDir: root }, 'serving the web client');
  return true;
}
