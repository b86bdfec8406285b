// /api/instances/:id/files…: the owner's files on an instance over SFTP. Another user's instance is a 404
// like any instance route. Bodies of uploads are never parsed or buffered: the route hands the request
// stream to the service.
import type { FastifyInstance, FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { ErrorCode } from '../errors/errors.js';
import { data, DataOf, IdParams, NoContent, Nullable, strictObject, Timestamp } from '../http/schemas.js';
import { sshLoginErrorCodes } from '../ssh/ssh-errors.js';
import { addressErrorCodes } from '../instances/instance.routes.js';
import type { DownloadLinks } from './download-links.js';
import type { FileService } from './file.service.js';

const Path = Type.String({ minLength: 1, maxLength: 4096 });
const Bool = Type.Union([Type.Literal('true'), Type.Literal('false'), Type.Literal('1'), Type.Literal('0')]);
const isTrue = (v: string | undefined) => v === 'true' || v === '1';

const EntryType = Type.Union([
  Type.Literal('file'),
  Type.Literal('directory'),
  Type.Literal('symlink'),
  Type.Literal('other'),
]);
const Listing = Type.Object({
  path: Type.String({ description: 'The directory listed, as the remote user sees it' }),
  parent: Nullable(Type.String()),
  entries: Type.Array(
    Type.Object({
      name: Type.String(),
      path: Type.String(),
      type: EntryType,
      targetType: Type.Optional(
        Type.Union([EntryType, Type.Null()], { description: 'For a symlink; null when it dangles' }),
      ),
      size: Type.Number(),
      mtime: Timestamp,
      mode: Type.Integer(),
    }),
  ),
  truncated: Type.Boolean({ description: 'More entries than one listing returns' }),
});
const PathResult = Type.Object({ path: Type.String() });
/** What any file operation can answer: the instance, the SSH login and the SFTP server's refusals. */
const fileErrors: readonly ErrorCode[] = [
  'INSTANCE_NOT_FOUND',
  ...addressErrorCodes,
  ...sshLoginErrorCodes,
  'SFTP_UNAVAILABLE',
  'SFTP_FAILED',
  'PATH_INVALID',
  'FILE_NOT_FOUND',
  'PERMISSION_DENIED',
];

export function registerFileRoutes(
  app: FastifyInstance,
  deps: {
    files: FileService;
    links: DownloadLinks;
    authenticate: preHandlerAsyncHookHandler;
  },
): void {
  const { files, links, authenticate } = deps;

  const r = app.withTypeProvider<TypeBoxTypeProvider>();

  r.get(
    '/api/instances/:id/files',
    {
      preHandler: authenticate,
      schema: {
        summary: 'List a directory on the instance over SFTP (default: the SSH user’s home)',
        params: IdParams,
        querystring: strictObject({ path: Type.Optional(Path) }),
        errors: [...fileErrors, 'NOT_A_DIRECTORY'],
        response: { 200: DataOf(Listing, 'The directory') },
      },
    },
    async (request) => data(await files.list(request.userId, request.params.id, request.query.path)),
  );

  // A download is authorised by the bearer token or by a link from POST …/files/link (a browser
  // navigating to the URL sends no Authorization header).
  const downloadAuth = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const q = request.query as { token?: string; path: string };
    const p = request.params as { id: string };
    if (q.token === undefined) {
      await authenticate.call(app, request, reply);
      return;
    }
    request.userId = links.verify(q.token, p.id, q.path).userId;
  };

  r.get(
    '/api/instances/:id/files/content',
    {
      preHandler: downloadAuth,
      schema: {
        summary: 'Download a file, streamed; `Range` resumes. Authorised by the bearer token or a link',
        params: IdParams,
        querystring: strictObject({ path: Path, token: Type.Optional(Type.String({ maxLength: 8192 })) }),
        // The bearer token, or none with the `token` of POST …/files/link.
        security: [{ bearerAuth: [] }, {}],
        errors: [
          ...fileErrors,
          'UNAUTHENTICATED',
          'INVALID_TOKEN',
          'TOKEN_EXPIRED',
          'ACCOUNT_DISABLED',
          'DOWNLOAD_LINK_INVALID',
          'IS_A_DIRECTORY',
          'RANGE_NOT_SATISFIABLE',
          'TRANSFER_LIMIT_REACHED',
          'RATE_LIMITED',
          'COORDINATION_UNAVAILABLE',
          'STORE_UNAVAILABLE',
        ],
        response: {
          200: binary('The whole file, with Content-Length and Content-Disposition'),
          206: binary('The asked range (Content-Range)'),
        },
      },
    },
    async (request, reply) => {
      const download = await files.download(request.userId, request.params.id, request.query.path, {
        range: request.headers.range,
        ifRange: header(request.headers['if-range']),
      });
      reply.raw.once('finish', () => download.settle());
      reply.raw.once('close', () => download.settle());
      return reply.status(download.status).headers(download.headers).send(download.stream);
    },
  );

  r.post(
    '/api/instances/:id/files/link',
    {
      preHandler: authenticate,
      schema: {
        summary: 'A short-lived download link for a file, for a browser to navigate to',
        params: IdParams,
        body: strictObject({ path: Path }),
        errors: ['INSTANCE_NOT_FOUND'],
        response: {
          200: DataOf(Type.Object({ url: Type.String(), expiresAt: Timestamp }), 'The link'),
        },
      },
    },
    async (request) => {
      // Checks ownership now, so a link is only ever issued for the caller's own instance.
      await files.checkOwner(request.userId, request.params.id);
      const { token, expiresAt } = links.issue({
        userId: request.userId,
        instanceId: request.params.id,
        path: request.body.path,
      });
      const query = new URLSearchParams({ path: request.body.path, token });
      return data({
        url: `/api/instances/${request.params.id}/files/content?${query.toString()}`,
        expiresAt: new Date(expiresAt).toISOString(),
      });
    },
  );

  r.post(
    '/api/instances/:id/files/mkdir',
    {
      preHandler: authenticate,
      schema: {
        summary: 'Make a directory',
        params: IdParams,
        body: strictObject({ path: Path }),
        errors: [...fileErrors, 'FILE_EXISTS', 'NOT_A_DIRECTORY', 'DISK_FULL'],
        response: { 201: DataOf(PathResult, 'The directory made') },
      },
    },
    async (request, reply) =>
      reply.status(201).send(data(await files.mkdir(request.userId, request.params.id, request.body.path))),
  );

  r.post(
    '/api/instances/:id/files/rename',
    {
      preHandler: authenticate,
      schema: {
        summary: 'Rename or move a file or directory (`overwrite` replaces a file at `to`)',
        params: IdParams,
        body: strictObject({ from: Path, to: Path, overwrite: Type.Optional(Type.Boolean()) }),
        errors: [...fileErrors, 'FILE_EXISTS', 'IS_A_DIRECTORY', 'NOT_A_DIRECTORY', 'DIRECTORY_NOT_EMPTY'],
        response: { 200: DataOf(PathResult, 'The new path') },
      },
    },
    async (request) =>
      data(
        await files.rename(
          request.userId,
          request.params.id,
          request.body.from,
          request.body.to,
          request.body.overwrite ?? false,
        ),
      ),
  );

  r.post(
    '/api/instances/:id/files/delete',
    {
      preHandler: authenticate,
      schema: {
        summary: 'Delete a file or an empty directory',
        params: IdParams,
        body: strictObject({ path: Path }),
        errors: [...fileErrors, 'DIRECTORY_NOT_EMPTY'],
        response: { 204: NoContent },
      },
    },
    async (request, reply) => {
      await files.delete(request.userId, request.params.id, request.body.path);
      return reply.status(204).send();
    },
  );

  // Uploads in a scope of their own: the body stays a stream, whatever its content type (or none).
  void app.register((scope, _opts, done) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, parsed) => parsed(null, undefined));
    const r = scope.withTypeProvider<TypeBoxTypeProvider>();
    r.put(
      '/api/instances/:id/files/content',
      {
        preHandler: authenticate,
        schema: {
          summary:
            'Upload a file: the body, streamed, is written under a temporary name and renamed when complete',
          params: IdParams,
          querystring: strictObject({ path: Path, overwrite: Type.Optional(Bool) }),
          consumes: ['application/octet-stream'],
          errors: [
            ...fileErrors,
            'FILE_EXISTS',
            'IS_A_DIRECTORY',
            'NOT_A_DIRECTORY',
            'DISK_FULL',
            'FILE_TOO_LARGE',
            'TRANSFER_LIMIT_REACHED',
            'UPLOAD_INCOMPLETE',
          ],
          response: {
            201: DataOf(Type.Object({ path: Type.String(), size: Type.Number() }), 'The file is in place'),
          },
        },
      },
      async (request, reply) => {
        const lengthHeader = request.headers['content-length'];
        const contentLength = lengthHeader === undefined ? null : Number(lengthHeader);
        try {
          const result = await files.upload(request.userId, request.params.id, request.query.path, {
            overwrite: isTrue(request.query.overwrite),
            contentLength: Number.isSafeInteger(contentLength) ? contentLength : null,
            body: request.raw,
          });
          return reply.status(201).send(data(result));
        } catch (e) {
          // The rest of the body is not read: ask the client to end the connection with our answer.
          if (!request.raw.readableEnded) void reply.header('connection', 'close');
          throw e;
        }
      },
    );

    done();
  });
}

/** A streamed file answer in the API description. */
function binary(description: string) {
  return {
    description,
    content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } },
  };
}

function header(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
