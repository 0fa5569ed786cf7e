import { maxAliasesPlugin } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthPlugin } from '@escape.tech/graphql-armor-max-depth';
import { maxDirectivesPlugin } from '@escape.tech/graphql-armor-max-directives';
import { maxTokensPlugin } from '@escape.tech/graphql-armor-max-tokens';
import { GraphQLError, type GraphQLSchema } from 'graphql';
import { createYoga, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import { isAppError, RetryLaterError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Context } from '../schema/context.ts';
import type { TransportContext } from './context.ts';
import { useRejectNul } from './input.ts';

export type Yoga = YogaServerInstance<TransportContext, Context>;

export interface YogaOptions {
  schema: GraphQLSchema;
  context: (initial: never) => Promise<Context>;
  logger: Logger;
  /** Operation limits (GRAPHQL_MAX_*), applied by graphql-armor on every transport. */
  limits: { depth: number; aliases: number; tokens: number; directives: number };
  /** Told about each operation a limit refused (logs and metrics). */
  onLimit: (limit: string) => void;
  /** Origins allowed to call /graphql from a browser (ALLOWED_ORIGINS); unset: none. */
  allowedOrigins?: readonly string[] | undefined;
}

/** Content types a browser may send cross-site without a CORS preflight. */
const SIMPLE_TYPES = new Set([
  'text/plain',
  'multipart/form-data',
  'application/x-www-form-urlencoded',
]);

/** Headers that mark a request as made by a script (a browser preflights them cross-site). */
export const CSRF_HEADERS = ['x-graphql-csrf', 'graphql-preflight', 'apollo-require-preflight'];

/**
 * CSRF prevention: a POST (any method but GET/HEAD/OPTIONS) must carry a content type a form
 * cannot send (e.g. application/json) or one of CSRF_HEADERS; otherwise 403. GET stays open
 * (it runs queries only, never mutations, and carries no ambient credentials: auth is a bearer
 * token, never a cookie), so the GraphQL-over-HTTP GET form keeps working.
 */
export function useCsrfPrevention(): Plugin {
  return {
    onRequest({ request, fetchAPI, endResponse }) {
      if (['GET', 'HEAD', 'OPTIONS'].includes(request.method)) return;
      if (CSRF_HEADERS.some((header) => request.headers.has(header))) return;
      const type = (request.headers.get('content-type') ?? '').split(';')[0]?.trim().toLowerCase();
      if (type && !SIMPLE_TYPES.has(type)) return;
      endResponse(
        new fetchAPI.Response(
          JSON.stringify({
            errors: [
              {
                message: `CSRF check: send content-type application/json or a ${CSRF_HEADERS[0]} header`,
                extensions: { code: 'FORBIDDEN' },
              },
            ],
          }),
          { status: 403, headers: { 'content-type': 'application/json; charset=utf-8' } },
        ),
      );
    },
  };
}

/** graphql-armor's depth, alias, token and directive limits; each refusal is reported. */
function armor({ limits, onLimit }: Pick<YogaOptions, 'limits' | 'onLimit'>): Plugin[] {
  const report = (limit: string) => [() => onLimit(limit)];
  return [
    maxTokensPlugin({ n: limits.tokens, onReject: report('graphqlTokens') }) as Plugin,
    maxDepthPlugin({
      n: limits.depth,
      flattenFragments: true,
      onReject: report('graphqlDepth'),
    }) as Plugin,
    maxAliasesPlugin({ n: limits.aliases, onReject: report('graphqlAliases') }) as Plugin,
    maxDirectivesPlugin({ n: limits.directives, onReject: report('graphqlDirectives') }) as Plugin,
  ];
}

/**
 * Maps errors for clients: AppErrors keep their message and get `extensions.code`; anything
 * else is logged in full and masked as INTERNAL_SERVER_ERROR.
 */
export function maskError(logger: Logger) {
  return (error: unknown, message: string): Error => {
    const original = error instanceof GraphQLError ? (error.originalError ?? error) : error;
    const where =
      error instanceof GraphQLError ? { nodes: error.nodes ?? null, path: error.path ?? null } : {};
    if (isAppError(original)) {
      const retryAfterMs = original instanceof RetryLaterError ? original.retryAfterMs : null;
      return new GraphQLError(original.message, {
        ...where,
        extensions: { code: original.code, ...(retryAfterMs === null ? {} : { retryAfterMs }) },
      });
    }
    if (error instanceof GraphQLError && !error.originalError) return error;
    if (original instanceof GraphQLError) return original;
    logger.error({ err: original }, 'internal error');
    return new GraphQLError(message, { ...where, extensions: { code: 'INTERNAL_SERVER_ERROR' } });
  };
}

/** GraphQL over HTTP (queries, mutations) at /graphql; GraphiQL is src/transport/graphiql.ts. */
export function createGraphQLServer(options: YogaOptions): Yoga {
  const { logger } = options;
  return createYoga<TransportContext, Context>({
    schema: options.schema,
    graphqlEndpoint: '/graphql',
    context: options.context as never,
    landingPage: false,
    healthCheckEndpoint: '/yoga-health',
    plugins: [useCsrfPrevention(), useRejectNul(), ...armor(options)],
    // No CORS headers unless origins are allowed: browsers then refuse cross-origin reads.
    cors: options.allowedOrigins?.length
      ? {
          origin: options.allowedOrigins.includes('*') ? '*' : [...options.allowedOrigins],
          methods: ['GET', 'POST', 'PUT', 'DELETE'],
          credentials: false,
        }
      : false,
    // The body limit is MAX_BODY_BYTES, enforced before yoga sees a request (app.ts: by
    // content-length, or by reading a chunked body, bounded). Yoga's own limit would pipe every
    // body through a TransformStream, about a tenth of a small request's CPU.
    maxRequestBodySize: false,
    logging: {
      // Yoga logs at debug several times per request: nothing is built unless debug is on.
      debug: (...args) => {
        if (logger.isLevelEnabled('debug')) logger.debug(args.map(String).join(' '));
      },
      info: (...args) => logger.info(args.map(String).join(' ')),
      warn: (...args) => logger.warn(args.map(String).join(' ')),
      error: (...args) => logger.error(args.map(String).join(' ')),
    },
    maskedErrors: { maskError: maskError(logger) },
    // GraphiQL is served beside yoga with separate, cacheable assets (graphiql.ts).
    graphiql: false,
  });
}
