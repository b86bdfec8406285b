// The process logger: pino JSON lines, with every field that could carry a secret redacted.
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export const redactPaths = [
  'password',
  '*.password',
  'privateKey',
  '*.privateKey',
  'passphrase',
  '*.passphrase',
  '*.auth.password',
  '*.auth.privateKey',
  '*.auth.passphrase',
  'accessToken',
  'refreshToken',
  '*.accessToken',
  '*.refreshToken',
  'ticket',
  '*.ticket',
  'vncPassword',
  '*.vncPassword',
  'req.headers.authorization',
  'req.headers.cookie',
  'req.query.ticket',
  'res.headers["set-cookie"]',
];

export function createLogger(
  options: { level: string; name?: string },
  destination?: DestinationStream,
): Logger {
  return pino(
    {
      level: options.level,
      name: options.name ?? 'clouddesk',
      redact: { paths: redactPaths, censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: {
        // Never log a URL's query string (it can hold a connect ticket) nor a share link's token.
        req: (req: { id?: string; method?: string; url?: string }) => ({
          id: req.id,
          method: req.method,
          url: req.url?.split('?')[0]?.replace(/^\/api\/shares\/[^/]{40,}/, '/api/shares/[token]'),
        }),
      },
    },
    destination,
  );
}
