// Evicts a PostgreSQL connection whose statement went unanswered past the store's deadline (issue 11).
// In a partition (packets dropped, no reset) the statement's bytes sit unacknowledged and TCP retransmits
// them with exponential backoff (up to 2 min between tries in Linux): after the heal, the connection
// notices only at its next retransmission, seconds to minutes later, and pg's query timeout does not help
// (the client goes back to the pool with the stalled statement still ahead of any new one). So a client
// whose statement has run for `stallMs` is ended: pg destroys the socket of a client with a statement
// in flight, the statement fails ('Connection terminated'), and pg-pool removes an ending client on
// release instead of keeping it. The next statement dials a fresh connection, whose SYN gets through as
// soon as the link does. The request behind it was already answered (store-retry.ts's deadline).
import type { PostgresPoolClient } from 'kysely';

/** What this needs of a pg PoolClient. */
export interface EndableClient {
  query(sql: string, parameters: unknown[]): Promise<unknown>;
  release(err?: boolean | Error): void;
  end(): Promise<void>;
}

export interface StallGuardOptions {
  /** A statement running this long ends its client; null = no bound (while migrations run). */
  stallMs: () => number | null;
  /** Called when a client is ended for a stalled statement (logs, metrics, tests). */
  onEvict?: () => void;
}

/**
 * The client as Kysely sees it, every statement timed: past `stallMs`, or when pg's query timeout
 * failed it, the client is ended. One wrapper
 * per pg client (Kysely keeps its connection object per client), made once by the caller.
 */
export function guardStalls(client: EndableClient, options: StallGuardOptions): PostgresPoolClient {
  let ended = false;
  const evict = () => {
    if (ended) return;
    ended = true;
    options.onEvict?.();
    client.end().catch(() => undefined);
  };
  const query = (sql: string, parameters: readonly unknown[]): Promise<unknown> => {
    const running = client.query(sql, [...parameters]);
    const ms = options.stallMs();
    const timer = ms === null ? undefined : setTimeout(evict, ms);
    running.then(
      () => clearTimeout(timer),
      (e: unknown) => {
        clearTimeout(timer);
        // pg's own query timeout fails the statement but keeps the client, stalled statement and all.
        if (ms !== null && e instanceof Error && e.message === 'Query read timeout') evict();
      },
    );
    return running;
  };
  return {
    query: query as PostgresPoolClient['query'],
    // pg-pool removes a client released with a truthy argument (Kysely's discarded connection).
    release: (destroy?: boolean) => client.release(destroy === true ? true : undefined),
  };
}
