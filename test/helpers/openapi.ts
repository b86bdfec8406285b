// Test helpers for the API description (src/http/api-docs.ts): the routes Fastify really registered,
// what a route's operation in the document lacks, and a check of real answers against the document.
import type { FastifyInstance } from 'fastify';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { errorCatalogue, type ErrorCode } from '../../src/errors/errors.js';

/* eslint-disable @typescript-eslint/no-explicit-any -- the document is plain JSON */
export type OpenApiDocument = Record<string, any>;

export interface RegisteredRoute {
  method: string;
  url: string;
}

/**
 * Every method and path in Fastify's router, read from `printRoutes()` (its own tree of what is
 * registered: independent of the onRoute hooks that feed the document). HEAD routes are left out.
 */
export function registeredRoutes(app: FastifyInstance): RegisteredRoute[] {
  const out: RegisteredRoute[] = [];
  const stack: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const at = line.indexOf('── ');
    if (at < 0) continue;
    const depth = (at - 1) / 4;
    const m = /^(.*?)(?: \(([^)]*)\))?$/.exec(line.slice(at + 3))!;
    stack.length = depth;
    stack.push(m[1]!);
    for (const method of (m[2] ?? '').split(',').map((s) => s.trim())) {
      if (method && method !== 'HEAD') out.push({ method, url: stack.join('') });
    }
  }
  return out;
}

/** `/api/instances/:id` → `/api/instances/{id}`. */
export function openapiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

/**
 * The operation of a route. Fastify's tree prints two parameters at one place as `:id|:token` (one
 * route names it `id`, another `token`): the route is found under either name.
 */
export function operationOf(doc: OpenApiDocument, method: string, url: string): any {
  let urls = [''];
  for (const part of url.split(/(:[A-Za-z0-9_]+(?:\|:[A-Za-z0-9_]+)+)/)) {
    const choices = part.includes('|') ? part.split('|') : [part];
    urls = urls.flatMap((u) => choices.map((c) => u + c));
  }
  for (const u of urls) {
    const op = doc.paths?.[openapiPath(u)]?.[method.toLowerCase()];
    if (op) return op;
  }
  return undefined;
}

/** The codes an error response lists (`error.code` narrowed), or null when it is not the envelope. */
export function codesOf(response: any): string[] | null {
  const schema = response?.content?.['application/json']?.schema;
  if (schema?.allOf?.[0]?.$ref !== '#/components/schemas/ErrorEnvelope') return null;
  const codes = schema.properties?.error?.properties?.code?.enum;
  return Array.isArray(codes) ? codes : null;
}

/** What the operation of a registered route lacks; [] when it is fully described. */
export function problemsOf(doc: OpenApiDocument, route: RegisteredRoute): string[] {
  const name = `${route.method} ${route.url}`;
  const op = operationOf(doc, route.method, route.url);
  if (!op) return [`${name}: not in the document`];
  const problems: string[] = [];
  if (typeof op.summary !== 'string' || op.summary.length < 8) problems.push(`${name}: no summary`);
  if (!Array.isArray(op.tags) || op.tags.length === 0) problems.push(`${name}: no tag`);
  const statuses = Object.keys(op.responses ?? {});
  const success = statuses.filter((s) => /^[23]\d\d$/.test(s));
  if (success.length === 0) problems.push(`${name}: no success answer`);
  for (const s of success) {
    const content = op.responses[s].content as Record<string, { schema?: object }> | undefined;
    const bodiless = s === '204' || s.startsWith('3');
    const described = bodiless ? !content : Object.values(content ?? {}).some((m) => m.schema);
    if (!described || op.responses[s].description === 'Default Response')
      problems.push(`${name}: answer ${s} has no schema or description`);
  }
  const errors = statuses.filter((s) => /^[45]\d\d$/.test(s));
  if (!errors.includes('500')) problems.push(`${name}: no 500 answer`);
  for (const s of errors) {
    const codes = codesOf(op.responses[s]);
    // A route may document a non-error body under an error status (health: 503 `unhealthy`).
    if (codes === null) {
      if (!op.responses[s].content?.['application/json']?.schema)
        problems.push(`${name}: ${s} has no schema`);
      continue;
    }
    if (codes.length === 0) problems.push(`${name}: ${s} lists no error code`);
    for (const code of codes) {
      const entry = errorCatalogue[code as ErrorCode] as { status: number } | undefined;
      if (!entry) problems.push(`${name}: ${s} lists ${code}, which is not in the catalogue`);
      else if (String(entry.status) !== s)
        problems.push(`${name}: ${code} is ${entry.status}, listed as ${s}`);
    }
  }
  const bearer = (op.security ?? []).some((req: object) => 'bearerAuth' in req);
  if (bearer) {
    const listed = codesOf(op.responses['401']) ?? [];
    for (const code of ['UNAUTHENTICATED', 'INVALID_TOKEN', 'TOKEN_EXPIRED'])
      if (!listed.includes(code)) problems.push(`${name}: signed-in route without 401 ${code}`);
  }
  return problems;
}

/** Objects with named properties and no word on others get `additionalProperties: false`. */
function closed(schema: any): any {
  if (Array.isArray(schema)) return schema.map(closed);
  if (schema === null || typeof schema !== 'object') return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) out[k] = closed(v);
  if (out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
  return out;
}

export interface Answer {
  method: string;
  /** The route's pattern (`request.routeOptions.url`). */
  url: string;
  status: number;
  body: string;
}

/**
 * Checks real answers against the document: the status is documented for the route and the body
 * matches its schema. Success bodies are held to exactly the documented fields (a field the document
 * does not name fails), so the description cannot fall behind the code unnoticed.
 */
export class AnswerChecker {
  private readonly ajv = new Ajv2020({ strict: false, allErrors: true });
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(private readonly doc: OpenApiDocument) {
    addFormats.default(this.ajv);
  }

  check(answer: Answer): string | null {
    const name = `${answer.method} ${answer.url} → ${answer.status}`;
    const op = operationOf(this.doc, answer.method, answer.url);
    if (!op) return `${name}: the route is not in the document`;
    const response = op.responses?.[String(answer.status)];
    if (!response) return `${name}: status not documented (body ${answer.body.slice(0, 200)})`;
    const schema = response.content?.['application/json']?.schema;
    if (!schema) return answer.body === '' ? null : `${name}: documented without a body, got one`;
    const key = `${name}`;
    let validate = this.compiled.get(key);
    if (!validate) {
      const strict = answer.status < 300 ? closed(schema) : schema;
      validate = this.ajv.compile({ ...strict, components: this.doc.components });
      this.compiled.set(key, validate);
    }
    let body: unknown;
    try {
      body = JSON.parse(answer.body);
    } catch {
      return `${name}: the body is not JSON`;
    }
    if (validate(body)) return null;
    return `${name}: ${this.ajv.errorsText(validate.errors)} in ${answer.body.slice(0, 300)}`;
  }
}

/** Records every answer the app sends from a route (call before the app is ready). */
export function recordAnswers(app: FastifyInstance): Answer[] {
  const answers: Answer[] = [];
  app.addHook('onSend', (request, reply, payload, done) => {
    const url = request.routeOptions.url;
    if (
      url?.startsWith('/api/') &&
      (typeof payload === 'string' || payload === undefined || payload === null)
    ) {
      answers.push({ method: request.method, url, status: reply.statusCode, body: payload ?? '' });
    }
    done(null, payload);
  });
  return answers;
}
