// Shared schema pieces. Every request object schema forbids unknown fields and bounds every string; the
// answer schemas describe what routes send (http/api-docs.ts makes the OpenAPI document from both).
import { Type, type TSchema } from '@sinclair/typebox';
import { idPattern } from '../lib/ids.js';

export const IdParams = Type.Object(
  { id: Type.String({ pattern: idPattern, maxLength: 36 }) },
  { additionalProperties: false },
);

export const Email = Type.String({ format: 'email', minLength: 3, maxLength: 254 });
export const Password = Type.String({ minLength: 8, maxLength: 256 });
export const Fingerprint = Type.String({ pattern: '^SHA256:[A-Za-z0-9+/]{43}$', maxLength: 50 });

export function strictObject<T extends Record<string, TSchema>>(properties: T) {
  return Type.Object(properties, { additionalProperties: false });
}

/** Wraps a value as the success envelope. */
export function data<T>(value: T): { data: T } {
  return { data: value };
}

/** A route's documented success answer: the envelope `{ data: T }`. */
export function DataOf<T extends TSchema>(schema: T, description: string) {
  return Type.Object({ data: schema }, { 'x-response-description': description });
}

/** A 204 answer (no body, so `reply.send()` takes nothing). */
export const NoContent = Type.Unsafe<undefined>({ type: 'null', 'x-response-description': 'Done; no body' });

export const Timestamp = Type.String({ format: 'date-time' });

export function Nullable<T extends TSchema>(schema: T) {
  return Type.Union([schema, Type.Null()]);
}

/** One page of a list paged by cursor: pass `nextCursor` back as `cursor` for the next page. */
export function PageOf<T extends TSchema>(item: T) {
  return Type.Object({
    items: Type.Array(item),
    nextCursor: Type.Union([Type.String(), Type.Null()], {
      description: 'The `cursor` of the next page; null on the last page',
    }),
  });
}
