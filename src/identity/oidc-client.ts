// The adapter to the company's OpenID provider, over openid-client: discovery (cached, tried again
// after a failure), the authorization URL (code flow, PKCE S256, state, nonce) and the code exchange,
// which checks state, nonce, issuer, audience, expiry and — enableNonRepudiationChecks — the ID
// token's signature against the provider's published keys (openid-client skips that by default for
// a token read straight from the token endpoint; we do not rely on the transport alone).
import * as client from 'openid-client';
import type { OidcSettings } from '../config/config.js';
import { AppError } from '../errors/errors.js';

export interface OidcChecks {
  state: string;
  nonce: string;
  codeVerifier: string;
  redirectUri: string;
}

/** What a sign-in learnt about the person: the ID token's claims, completed from UserInfo. */
export type OidcClaims = Record<string, unknown> & { iss: string; sub: string };

export interface OidcProviderPort {
  authorizationUrl(checks: OidcChecks): Promise<URL>;
  /** `callback`: the callback request's query string. */
  exchange(callback: URLSearchParams, checks: OidcChecks): Promise<OidcClaims>;
}

const DISCOVERY_TIMEOUT_S = 10;

export class OidcClient implements OidcProviderPort {
  private discovered: Promise<client.Configuration> | undefined;

  constructor(private readonly settings: OidcSettings) {}

  private configuration(): Promise<client.Configuration> {
    this.discovered ??= this.discover().catch((err: unknown) => {
      this.discovered = undefined;
      throw new AppError('OIDC_PROVIDER_UNAVAILABLE', { cause: err });
    });
    return this.discovered;
  }

  private async discover(): Promise<client.Configuration> {
    const { issuer, clientId, clientSecret } = this.settings;
    const insecure = new URL(issuer).protocol === 'http:'; // loopback only (config.ts)
    const config = await client.discovery(
      new URL(issuer),
      clientId,
      clientSecret ?? undefined,
      clientSecret === null ? client.None() : client.ClientSecretBasic(clientSecret),
      {
        timeout: DISCOVERY_TIMEOUT_S,
        execute: insecure
          ? [client.allowInsecureRequests, client.enableNonRepudiationChecks]
          : [client.enableNonRepudiationChecks],
      },
    );
    return config;
  }

  async authorizationUrl(checks: OidcChecks): Promise<URL> {
    const config = await this.configuration();
    return client.buildAuthorizationUrl(config, {
      redirect_uri: checks.redirectUri,
      scope: this.settings.scopes.join(' '),
      response_type: 'code',
      code_challenge: await client.calculatePKCECodeChallenge(checks.codeVerifier),
      code_challenge_method: 'S256',
      state: checks.state,
      nonce: checks.nonce,
    });
  }

  async exchange(callback: URLSearchParams, checks: OidcChecks): Promise<OidcClaims> {
    const config = await this.configuration();
    const current = new URL(checks.redirectUri);
    current.search = callback.toString();
    let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    try {
      tokens = await client.authorizationCodeGrant(
        config,
        current,
        {
          pkceCodeVerifier: checks.codeVerifier,
          expectedState: checks.state,
          expectedNonce: checks.nonce,
          idTokenExpected: true,
        },
        { redirect_uri: checks.redirectUri },
      );
    } catch (err) {
      throw classify(err);
    }
    const idClaims = tokens.claims();
    if (!idClaims) throw new AppError('OIDC_TOKEN_INVALID');
    const claims: OidcClaims = { ...idClaims };
    // Many providers put email and groups only in UserInfo; the ID token's own claims win.
    if (config.serverMetadata().userinfo_endpoint !== undefined) {
      try {
        const info = await client.fetchUserInfo(config, tokens.access_token, idClaims.sub);
        for (const [k, v] of Object.entries(info)) if (!(k in claims)) claims[k] = v;
      } catch (err) {
        throw classify(err);
      }
    }
    return claims;
  }
}

/** The provider's own refusal (access_denied, a bad code) vs. an answer we refuse vs. no answer. */
function classify(err: unknown): AppError {
  if (err instanceof client.AuthorizationResponseError) return new AppError('OIDC_DENIED', { cause: err });
  if (err instanceof client.ResponseBodyError) return new AppError('OIDC_DENIED', { cause: err });
  if (err instanceof TypeError || (err instanceof Error && err.name === 'TimeoutError'))
    return new AppError('OIDC_PROVIDER_UNAVAILABLE', { cause: err });
  return new AppError('OIDC_TOKEN_INVALID', { cause: err });
}
