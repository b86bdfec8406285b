// Id generation as a dependency (tests may inject predictable ids).
import { randomUUID } from 'node:crypto';

export type IdGenerator = () => string;

export const randomId: IdGenerator = () => randomUUID();

/** Ids in paths are UUIDs; anything else is a 400 before any query runs. */
export const idPattern = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
