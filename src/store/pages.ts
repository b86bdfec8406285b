/**
 * Rows per statement for the store's batched reads and writes: bounded however many a node holds, and
 * well inside PostgreSQL's 65,535 and SQLite's 32,766 parameters for the widest row (4 values).
 */
export const ROWS_PER_STATEMENT = 500;

/** `items` in consecutive pages of at most `size`, one statement's worth each. */
export function* pages<T>(items: readonly T[], size = ROWS_PER_STATEMENT): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}
