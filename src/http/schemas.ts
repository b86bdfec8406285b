// Shared request-schema pieces. Every object schema forbids unknown fields and bounds every string.
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
