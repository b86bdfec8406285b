// Which browser origins may call the API and open viewers: the gateway's own origin always, plus
// CORS_ORIGIN entries — exact origins (`https://clouddesk.app`) or subdomain patterns
// (`https://*.clouddesk.app`, matching any depth of subdomain but not the bare domain).

export function originMatches(origin: string, allowed: readonly string[]): boolean {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  for (const entry of allowed) {
    if (entry === origin) return true;
    const m = /^(https?):\/\/\*\.([^/:]+)(?::(\d+))?$/.exec(entry);
    if (m) {
      const [, scheme, domain, port] = m;
      if (
        url.protocol === `${scheme}:` &&
        url.hostname.endsWith(`.${domain!}`) &&
        (port === undefined ? url.port === '' : url.port === port)
      ) {
        return true;
      }
    }
  }
  return false;
}

export function isOriginAllowed(
  origin: string,
  host: string | undefined,
  allowed: readonly string[],
): boolean {
  if (host !== undefined) {
    try {
      if (new URL(origin).host === host) return true;
    } catch {
      return false;
    }
  }
  return originMatches(origin, allowed);
}
