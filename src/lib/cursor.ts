// Opaque page cursors: the sort key of the last row returned (a time and an id), base64url JSON. A
// cursor that does not decode is CURSOR_INVALID, never a query on garbage.
import { AppError } from '../errors/errors.js';

export interface CursorKey {
  t: number;
  id: string;
}

export function encodeCursor(key: CursorKey): string {
  return Buffer.from(JSON.stringify([key.t, key.id])).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): CursorKey | undefined {
  if (cursor === undefined || cursor === '') return undefined;
  try {
    const value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (
      Array.isArray(value) &&
      value.length === 2 &&
      Number.isSafeInteger(value[0]) &&
      typeof value[1] === 'string' &&
      value[1].length <= 64
    ) {
      return { t: value[0] as number, id: value[1] };
    }
  } catch {
    // fall through
  }
  throw new AppError('CURSOR_INVALID');
}

/** A page of rows and the cursor of the next page (null on the last one). */
export function page<R, T>(
  rows: readonly R[],
  limit: number,
  key: (row: R) => CursorKey,
  present: (row: R) => T,
): { items: T[]; nextCursor: string | null } {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return {
    items: items.map(present),
    nextCursor: rows.length > limit && last !== undefined ? encodeCursor(key(last)) : null,
  };
}
