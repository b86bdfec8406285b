// The client's HTTP contract with the gateway: envelopes, errors with codes, the in-memory access
// token and the silent refresh through the cookie.
import { describe, expect, it, vi } from 'vitest';
import { ApiClient } from '../src/api/api-client.js';
import { ApiError, describeError } from '../src/api/api-error.js';

interface Call {
  method: string;
  path: string;
  auth: string | null;
  body: unknown;
}

type Handler = (call: Call) => { status: number; body?: unknown; headers?: Record<string, string> };

function fakeGateway(handler: Handler) {
  const calls: Call[] = [];
  const fetch = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const headers = new Headers(init?.headers);
    const call: Call = {
      method: init?.method ?? 'GET',
      path: String(input),
      auth: headers.get('Authorization'),
      body: init?.body ? JSON.parse(String(init.body)) : undefined,
    };
    calls.push(call);
    const answer = handler(call);
    return new Response(answer.body === undefined ? null : JSON.stringify(answer.body), {
      status: answer.status,
      headers: { 'Content-Type': 'application/json', ...answer.headers },
    });
  });
  return { fetch: fetch as unknown as typeof globalThis.fetch, calls };
}

const user = { id: 'u1', email: 'a@example.com' };

describe('ApiClient', () => {
  it('keeps the access token from sign-in and sends it as a bearer token', async () => {
    const gw = fakeGateway((c) => {
      if (c.path === '/api/auth/login')
        return { status: 200, body: { data: { user, accessToken: 'A1', refreshToken: 'R1' } } };
      return { status: 200, body: { data: [] } };
    });
    const api = new ApiClient({ fetch: gw.fetch });
    expect(await api.login('a@example.com', 'pw')).toEqual(user);
    await api.listInstances();
    expect(gw.calls[1]).toMatchObject({ method: 'GET', path: '/api/instances', auth: 'Bearer A1' });
  });

  it('refreshes once through the cookie when the token expired, then retries', async () => {
    let token = 'old';
    const gw = fakeGateway((c) => {
      if (c.path === '/api/auth/refresh') {
        token = 'new';
        return { status: 200, body: { data: { accessToken: 'new', refreshToken: 'R2' } } };
      }
      if (c.auth !== `Bearer ${token}` || token === 'old')
        return { status: 401, body: { error: { code: 'TOKEN_EXPIRED', message: 'expired' } } };
      return { status: 200, body: { data: ['ok'] } };
    });
    const api = new ApiClient({ fetch: gw.fetch });
    // Sign in with a token the gateway will call expired.
    (api as unknown as { accessToken: string }).accessToken = 'old';
    const [a, b] = await Promise.all([api.listInstances(), api.activeSessions()]);
    expect(a).toEqual(['ok']);
    expect(b).toEqual(['ok']);
    const refreshes = gw.calls.filter((c) => c.path === '/api/auth/refresh');
    expect(refreshes).toHaveLength(1);
    // The refresh token travels in the httpOnly cookie, not in the body.
    expect(refreshes[0]!.body).toEqual({});
  });

  it('signs out with "session expired" when the refresh is refused', async () => {
    const gw = fakeGateway((c) =>
      c.path === '/api/auth/refresh'
        ? { status: 401, body: { error: { code: 'INVALID_TOKEN', message: 'bad' } } }
        : { status: 401, body: { error: { code: 'TOKEN_EXPIRED', message: 'expired' } } },
    );
    const onSignedOut = vi.fn();
    const api = new ApiClient({ fetch: gw.fetch, onSignedOut });
    (api as unknown as { accessToken: string }).accessToken = 'old';
    await expect(api.listInstances()).rejects.toMatchObject({ code: 'SESSION_EXPIRED' });
    expect(onSignedOut).toHaveBeenCalledOnce();
    expect(describeError(onSignedOut.mock.calls[0]![0])).toBe('Your session has expired. Sign in again.');
    expect(api.signedIn).toBe(false);
  });

  it('restores a sign-in after a reload from the cookie alone, or reports none', async () => {
    const ok = fakeGateway((c) =>
      c.path === '/api/auth/refresh'
        ? { status: 200, body: { data: { accessToken: 'A', refreshToken: 'R' } } }
        : { status: 200, body: { data: user } },
    );
    expect(await new ApiClient({ fetch: ok.fetch }).restore()).toEqual(user);
    expect(ok.calls[1]).toMatchObject({ path: '/api/auth/me', auth: 'Bearer A' });

    const none = fakeGateway(() => ({
      status: 401,
      body: { error: { code: 'UNAUTHENTICATED', message: 'no' } },
    }));
    expect(await new ApiClient({ fetch: none.fetch }).restore()).toBeNull();
  });

  it('serialises refreshes through the cross-tab lock', async () => {
    const order: string[] = [];
    const gw = fakeGateway(() => {
      order.push('refresh');
      return { status: 200, body: { data: { accessToken: 'A', refreshToken: 'R' } } };
    });
    const api = new ApiClient({
      fetch: gw.fetch,
      withRefreshLock: async (fn) => {
        order.push('lock');
        const r = await fn();
        order.push('unlock');
        return r;
      },
    });
    await api.refresh();
    expect(order).toEqual(['lock', 'refresh', 'unlock']);
  });

  it('turns error envelopes, Retry-After, network failures and non-JSON answers into ApiErrors', async () => {
    const limited = fakeGateway(() => ({
      status: 429,
      body: { error: { code: 'RATE_LIMITED', message: 'Too many' } },
      headers: { 'Retry-After': '42' },
    }));
    const e = await new ApiClient({ fetch: limited.fetch }).login('a@b.co', 'x').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ApiError);
    expect(describeError(e)).toBe('Too many attempts. Try again in 42 seconds.');

    const down = new ApiClient({
      fetch: (() => Promise.reject(new TypeError('fetch failed'))) as typeof fetch,
    });
    const n = await down.login('a@b.co', 'x').catch((x: unknown) => x);
    expect(n).toMatchObject({ status: 0, code: 'NETWORK', isTransient: true });

    const proxy = new ApiClient({
      fetch: (async () => new Response('<html>Bad gateway</html>', { status: 502 })) as typeof fetch,
    });
    const p = await proxy.login('a@b.co', 'x').catch((x: unknown) => x);
    expect(p).toMatchObject({ status: 502, code: 'BAD_RESPONSE' });
    expect(describeError(p)).toMatch(/temporarily unavailable/);

    const wrong = fakeGateway(() => ({
      status: 401,
      body: { error: { code: 'INVALID_CREDENTIALS', message: 'x' } },
    }));
    const w = await new ApiClient({ fetch: wrong.fetch }).login('a@b.co', 'x').catch((x: unknown) => x);
    expect(describeError(w)).toBe('Wrong email or password.');
  });

  it('keeps host key mismatch details for the re-trust screen', async () => {
    const gw = fakeGateway(() => ({
      status: 409,
      body: {
        error: {
          code: 'HOST_KEY_MISMATCH',
          message: 'changed',
          details: { expected: 'SHA256:a', actual: 'SHA256:b' },
        },
      },
    }));
    const api = new ApiClient({ fetch: gw.fetch });
    (api as unknown as { accessToken: string }).accessToken = 'A';
    const e = await api.testInstance('i1').catch((x: unknown) => x);
    expect(e).toMatchObject({
      status: 409,
      code: 'HOST_KEY_MISMATCH',
      details: { expected: 'SHA256:a', actual: 'SHA256:b' },
    });
  });

  it('treats 204 as success without a body', async () => {
    const gw = fakeGateway(() => ({ status: 204 }));
    const api = new ApiClient({ fetch: gw.fetch });
    (api as unknown as { accessToken: string }).accessToken = 'A';
    await expect(api.deleteInstance('i1')).resolves.toBeUndefined();
    expect(gw.calls[0]).toMatchObject({ method: 'DELETE', path: '/api/instances/i1' });
  });
});
