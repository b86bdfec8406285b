// /api/instances/:id/files…: the owner's files on an instance over SFTP. Another user's instance is a 404
// like any instance route. Bodies of uploads are never parsed or buffered: the route hands the request
// stream to the service.
import type { FastifyInstance, FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { data, IdParams, strictObject } from '../http/schemas.js';
import type { DownloadLinks } from './download-links.js';
import type { FileService } from './file.service.js';

const Path = Type.String({ minLength: 1, maxLength: 4096 });
const Bool = Type.Union([Type.Literal('true'), Type.Literal('false'), Type.Literal('1'), Type.Literal('0')]);
const isTrue = (v: string | undefined) => v === 'true' || v === '1';

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
      schema: { params: IdParams, querystring: strictObject({ path: Type.Optional(Path) }) },
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
        params: IdParams,
        querystring: strictObject({ path: Path, token: Type.Optional(Type.String({ maxLength: 8192 })) }),
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
    { preHandler: authenticate, schema: { params: IdParams, body: strictObject({ path: Path }) } },
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
    { preHandler: authenticate, schema: { params: IdParams, body: strictObject({ path: Path }) } },
    async (request, reply) =>
      reply.status(201).send(data(await files.mkdir(request.userId, request.params.id, request.body.path))),
  );

  r.post(
    '/api/instances/:id/files/rename',
    {
      preHandler: authenticate,
      schema: {
        params: IdParams,
        body: strictObject({ from: Path, to: Path, overwrite: Type.Optional(Type.Boolean()) }),
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
    { preHandler: authenticate, schema: { params: IdParams, body: strictObject({ path: Path }) } },
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
          params: IdParams,
          querystring: strictObject({ path: Path, overwrite: Type.Optional(Bool) }),
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

function header(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
