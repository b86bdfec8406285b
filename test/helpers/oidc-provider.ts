// A real OpenID provider for tests: the `oidc-provider` package on a loopback port, with an RSA
// signing key made for the run, discovery and the standard endpoints. Its login page is the test's
// own (GET /interaction/:uid shows a form, POST …/login with `login=<account id>` signs that account
// in and grants the requested scopes), so a browser or a cookie-jar client can walk the flow.
// `forgeNextIdToken()` makes the next token answer carry an ID token re-signed with another key
// (same `kid`), as an attacker in the middle would.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, SignJWT } from 'jose';
import Provider from 'oidc-provider';

export interface TestAccount {
  email?: string;
  email_verified?: boolean;
  name?: string;
  groups?: string[];
}

export interface OidcProviderFixture {
  issuer: string;
  clientId: string;
  clientSecret: string;
  accounts: Map<string, TestAccount>;
  forgeNextIdToken(): void;
  stop(): Promise<void>;
}

export async function startOidcProvider(options: {
  redirectUris: string[];
  accounts: Record<string, TestAccount>;
  /** A port chosen beforehand (a gateway started first was told the issuer); default any free one. */
  port?: number;
}): Promise<OidcProviderFixture> {
  const accounts = new Map(Object.entries(options.accounts));
  const clientId = 'clouddesk';
  const clientSecret = 'a-test-client-secret-that-is-long-enough';
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
  const { privateKey: otherKey } = await generateKeyPair('RS256');

  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: options.redirectUris,
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: [jwk] },
    cookies: { keys: ['a-test-cookie-signing-key'] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    pkce: { required: () => true },
    findAccount: (_ctx, id) => {
      const account = accounts.get(id);
      if (!account) return undefined;
      return { accountId: id, claims: () => ({ sub: id, ...account }) };
    },
  });
  const handle = provider.callback();
  let forge = false;

  const interaction = async (req: IncomingMessage, res: ServerResponse, uid: string, post: boolean) => {
    if (!post) {
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(
        `<!doctype html><title>Test IdP</title><form method="post" action="/interaction/${uid}/login">` +
          `<label>Account <input name="login" autofocus></label><button type="submit">Sign in</button></form>`,
      );
      return;
    }
    const body = new URLSearchParams(await readBody(req));
    const accountId = body.get('login') ?? '';
    const details = await provider.interactionDetails(req, res);
    const grant = new provider.Grant({ accountId, clientId: String(details.params.client_id) });
    grant.addOIDCScope(String(details.params.scope));
    const grantId = await grant.save();
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId }, consent: { grantId } },
      { mergeWithLastSubmission: false },
    );
  };

  // The token answer with its ID token's payload signed again by a key the provider never published.
  const forgedToken = async (req: IncomingMessage, res: ServerResponse) => {
    const body = await readBody(req);
    const answer = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: {
        'content-type': req.headers['content-type'] ?? 'application/x-www-form-urlencoded',
        authorization: req.headers.authorization ?? '',
        'x-test-pass': '1',
      },
      body,
    });
    const tokens = (await answer.json()) as { id_token?: string };
    if (tokens.id_token) {
      const header = decodeProtectedHeader(tokens.id_token);
      tokens.id_token = await new SignJWT(decodeJwt(tokens.id_token))
        .setProtectedHeader({ alg: 'RS256', kid: header.kid ?? 'test-key' })
        .sign(otherKey);
    }
    res.statusCode = answer.status;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(tokens));
  };

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', issuer);
    const m = /^\/interaction\/([^/]+)(\/login)?$/.exec(url.pathname);
    const work = m
      ? interaction(req, res, m[1]!, m[2] !== undefined && req.method === 'POST')
      : url.pathname === '/token' && forge && req.headers['x-test-pass'] === undefined
        ? ((forge = false), forgedToken(req, res))
        : Promise.resolve(handle(req, res));
    work.catch((err: unknown) => {
      res.statusCode = 500;
      res.end(String(err));
    });
  });

  return {
    issuer,
    clientId,
    clientSecret,
    accounts,
    forgeNextIdToken: () => {
      forge = true;
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
