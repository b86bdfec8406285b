// The API described (issue 12): an OpenAPI 3.1 document made by @fastify/swagger from the routes' own
// schemas, served at /api/openapi.json, with a reference page (Swagger UI) at /api/docs.
//
// A route states what only it knows: `summary`, its success `response` schemas and, in `errors`, the
// codes its own work can answer. Everything that follows from how the route is registered is added here
// when Fastify registers it (an onRoute hook, so a route added anywhere gets it without a list to
// update): its tag (from its path), its security scheme and the codes of its guards (the hooks marked in
// authenticate.ts), the codes of request parsing and validation, and INTERNAL. The codes become one
// error response per HTTP status, each the one error envelope (`#/components/schemas/ErrorEnvelope`)
// with `error.code` narrowed to that route's codes.
//
// The response schemas describe; they do not filter. Fastify would otherwise compile them into
// serializers that silently drop any field the schema does not name, so a drifted description would
// change answers instead of failing a test (test/openapi.test.ts checks real answers against it).
//
// Cost at start: the hook edits each route's schema in place; the document itself is generated on the
// first request for it and then served from memory.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifySchema, RouteOptions } from 'fastify';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import { errorCatalogue, type ErrorCode } from '../errors/errors.js';
import { guardOf } from './authenticate.js';

declare module 'fastify' {
  interface FastifySchema {
    /**
     * The error codes this route's own work can answer, beyond those that follow from how it is
     * registered (see the module comment of http/api-docs.ts).
     */
    errors?: readonly ErrorCode[];
  }
}

export const OPENAPI_PATH = '/api/openapi.json';
export const DOCS_PREFIX = '/api/docs';

const tagDescriptions: Record<string, string> = {
  auth: 'Sign-up, sign-in and tokens',
  instances: "The caller's machines: SSH address and credentials (stored encrypted, never returned)",
  sessions: 'Desktops: connect, WebSocket tickets, live sessions and history',
  usage: "The caller's usage per day and instance",
  audit: "The caller's own audit trail",
  admin: 'Administration (admins only): users, live sessions, invites, everyone’s audit trail',
  health: 'Liveness and readiness',
};

/** The codes a signed-in route can answer from `authenticate` alone (token, account, API rate limit). */
const userGuardCodes: readonly ErrorCode[] = [
  'UNAUTHENTICATED',
  'INVALID_TOKEN',
  'TOKEN_EXPIRED',
  'ACCOUNT_DISABLED',
  'RATE_LIMITED',
  'COORDINATION_UNAVAILABLE',
  'STORE_UNAVAILABLE',
];
const bodyMethods = new Set(['POST', 'PUT', 'PATCH']);
/** The codes answered with `Retry-After` (error-handler.ts sends it from `details.retryAfterSeconds`). */
const retryAfterCodes = new Set<ErrorCode>([
  'RATE_LIMITED',
  'OVERLOADED',
  'BUSY',
  'SHUTTING_DOWN',
  'COORDINATION_UNAVAILABLE',
]);

const errorCodeList = Object.keys(errorCatalogue) as ErrorCode[];

/** Shared schemas: referenced from every error response, listed once in components.schemas. */
const sharedSchemas = [
  {
    $id: 'ErrorCode',
    type: 'string',
    enum: errorCodeList,
    description:
      'A stable error code. Its HTTP status and meaning are fixed (see the table in the API description); the message may change.',
  },
  {
    $id: 'ErrorEnvelope',
    type: 'object',
    description: 'Every failure: a stable code, a human message, and sometimes safe extra facts.',
    required: ['error'],
    additionalProperties: false,
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message'],
        additionalProperties: false,
        properties: {
          code: { $ref: 'ErrorCode#' },
          message: { type: 'string' },
          details: {
            type: 'object',
            description:
              'Safe extra facts for some codes, e.g. `retryAfterSeconds` (also sent as `Retry-After`) or the fingerprint a `HOST_KEY_MISMATCH` saw.',
            additionalProperties: true,
          },
        },
      },
    },
  },
];

function codesOfRoute(route: RouteOptions, schema: FastifySchema): { codes: ErrorCode[]; signedIn: boolean } {
  const codes = new Set<ErrorCode>(schema.errors ?? []);
  const hooks = [route.onRequest, route.preValidation, route.preHandler].flatMap((h) =>
    h === undefined ? [] : Array.isArray(h) ? (h as unknown[]) : [h],
  );
  const guards = new Set(hooks.map(guardOf));
  if (guards.has('user')) for (const c of userGuardCodes) codes.add(c);
  if (guards.has('admin')) codes.add('FORBIDDEN');
  if (schema.body || schema.querystring || schema.params || schema.headers) codes.add('VALIDATION_FAILED');
  const methods = Array.isArray(route.method) ? route.method : [route.method];
  if (methods.some((m) => bodyMethods.has(m))) {
    codes.add('MALFORMED_JSON');
    codes.add('UNSUPPORTED_MEDIA_TYPE');
    codes.add('PAYLOAD_TOO_LARGE');
  }
  codes.add('INTERNAL');
  return { codes: [...codes], signedIn: guards.has('user') };
}

/** One error response per status: the envelope, `error.code` narrowed to the route's codes there. */
function errorResponses(codes: readonly ErrorCode[]): Record<string, unknown> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes) {
    const status = errorCatalogue[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const out: Record<string, unknown> = {};
  for (const [status, list] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    list.sort();
    const retry = list.some((c) => retryAfterCodes.has(c));
    out[String(status)] = {
      ...(retry && {
        headers: {
          'Retry-After': {
            type: 'integer',
            description: 'Seconds to wait before trying again (sent with `details.retryAfterSeconds`)',
          },
        },
      }),
      'x-response-description': list.map((c) => `- \`${c}\`: ${errorCatalogue[c].message}`).join('\n'),
      allOf: [{ $ref: 'ErrorEnvelope#' }],
      type: 'object',
      properties: { error: { type: 'object', properties: { code: { enum: list } } } },
    };
  }
  return out;
}

function tagOf(url: string): string {
  return /^\/api\/([a-z][a-z0-9-]*)/.exec(url)?.[1] ?? 'api';
}

function isDocumented(url: string): boolean {
  return url.startsWith('/api/') && url !== OPENAPI_PATH && !url.startsWith(DOCS_PREFIX);
}

/**
 * Adds to every /api route, as Fastify registers it, what follows from how it is registered. Call it
 * on the root instance before any route is registered.
 */
export function describeApiRoutes(app: FastifyInstance): void {
  for (const schema of sharedSchemas) app.addSchema(schema);
  app.setSerializerCompiler(() => (value) => JSON.stringify(value));
  app.addHook('onRoute', (route) => {
    if (!isDocumented(route.url) || route.method === 'HEAD') return;
    const schema: FastifySchema = (route.schema ??= {});
    if (schema.hide) return;
    const { codes, signedIn } = codesOfRoute(route, schema);
    delete schema.errors;
    schema.tags ??= [tagOf(route.url)];
    schema.security ??= signedIn ? [{ bearerAuth: [] }] : [];
    const declared = (schema.response ?? {}) as Record<string, unknown>;
    schema.response = { ...errorResponses(codes), ...declared };
  });
}

interface SchemaLike {
  type?: unknown;
  anyOf?: SchemaLike[];
}
interface OperationLike {
  requestBody?: { required?: boolean; content?: Record<string, { schema?: SchemaLike }> };
}

/**
 * A body schema that admits `null` (refresh, logout, invites: no body at all is a valid call) is an
 * optional request body; @fastify/swagger marks every body required.
 */
function optionalBodies<T extends { paths?: unknown }>(doc: T): T {
  for (const path of Object.values((doc.paths ?? {}) as Record<string, Record<string, OperationLike>>)) {
    for (const op of Object.values(path)) {
      const body = op.requestBody;
      if (!body?.content) continue;
      for (const media of Object.values(body.content)) {
        const anyOf = media.schema?.anyOf;
        const nullAt = anyOf?.findIndex((s) => s.type === 'null') ?? -1;
        if (!anyOf || nullAt < 0) continue;
        body.required = false;
        const rest = anyOf.filter((_, i) => i !== nullAt);
        media.schema = rest.length === 1 ? rest[0] : { anyOf: rest };
      }
    }
  }
  return doc;
}

function packageVersion(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  for (const dir of [resolve(here, '../..'), resolve(here, '../../..')]) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  }
  return '0.0.0';
}

function apiDescription(): string {
  const rows = errorCodeList.map((c) => {
    const e = errorCatalogue[c];
    return `| \`${c}\` | ${e.status} | ${e.message.replace(/\|/g, '\\|')} |`;
  });
  return [
    'Browser access to cloud machines’ desktops: a WebSocket ⇄ SSH ⇄ VNC gateway.',
    '',
    'Every request and answer is JSON. Success is `{ "data": … }` (health and readiness answer bare objects);',
    'failure is the error envelope `{ "error": { "code": "STABLE_CODE", "message": "…" } }`.',
    '',
    'Sign in with `POST /api/auth/login` (or register) and send its `accessToken` as',
    '`Authorization: Bearer <token>`. The refresh token comes in the body and in the httpOnly `cd_refresh`',
    'cookie (path `/api/auth`); refresh and logout take either.',
    '',
    'The desktop stream itself is a WebSocket at `/vnc?ticket=…` (RFB, subprotocol `binary`), opened',
    'with the `websocketUrl` a connect or ticket call answers.',
    '',
    '## Error codes',
    '',
    'Each route lists the codes it can answer under each status. The codes are stable; the messages are for people.',
    '',
    '| code | status | meaning |',
    '|---|---|---|',
    ...rows,
  ].join('\n');
}

/**
 * @fastify/swagger (collects the routes registered after it: call before any route), the document at
 * /api/openapi.json and Swagger UI at /api/docs.
 */
export async function registerApiDocs(app: FastifyInstance): Promise<void> {
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'CloudDesk API', version: packageVersion(), description: apiDescription() },
      tags: Object.entries(tagDescriptions).map(([name, description]) => ({ name, description })),
      components: {
        securitySchemes: {
          bearerAuth: {
            type: 'http',
            scheme: 'bearer',
            bearerFormat: 'JWT',
            description: 'The access token of a sign-in (`accessToken`), valid for `JWT_ACCESS_EXPIRY`.',
          },
          refreshCookie: {
            type: 'apiKey',
            in: 'cookie',
            name: 'cd_refresh',
            description:
              'The refresh token as the httpOnly, SameSite=Strict cookie a sign-in sets (path `/api/auth`). A call that relies on it from a browser must come from an allowed origin.',
          },
        },
      },
    },
    // Shared schemas keep their $id as their name: `#/components/schemas/ErrorEnvelope`.
    refResolver: {
      buildLocalReference: (json, _base, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
    transform: ({ schema, url }) =>
      isDocumented(url) ? { schema, url } : { schema: { ...schema, hide: true }, url },
    transformObject: (document) =>
      'openapiObject' in document ? optionalBodies(document.openapiObject) : document.swaggerObject,
  });

  let document: string | undefined;
  app.get(OPENAPI_PATH, { schema: { hide: true } }, (_request, reply) => {
    document ??= JSON.stringify(app.swagger());
    return reply.type('application/json; charset=utf-8').header('Cache-Control', 'no-cache').send(document);
  });

  await app.register(fastifySwaggerUi, {
    routePrefix: DOCS_PREFIX,
    uiConfig: { deepLinking: true, defaultModelsExpandDepth: 0, tryItOutEnabled: false },
    // Everything is served from here: no inline script, no third-party origin, not framed.
    staticCSP: [
      "default-src 'self'",
      "script-src 'self'",
      // The one inline <style> swagger-ui-bundle 5 injects (found with Chromium's CSP report).
      "style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='",
      "img-src 'self' data:",
      "font-src 'self' data:",
      "connect-src 'self'",
      "object-src 'none'",
      "base-uri 'none'",
      "form-action 'self'",
      "frame-ancestors 'none'",
    ].join('; '),
  });
}
