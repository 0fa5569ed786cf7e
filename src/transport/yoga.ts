import { GraphQLError, type GraphQLSchema } from 'graphql';
import { createYoga, type YogaServerInstance } from 'graphql-yoga';
import { isAppError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Context } from '../schema/context.ts';
import type { TransportContext } from './context.ts';

export type Yoga = YogaServerInstance<TransportContext, Context>;

export interface YogaOptions {
  schema: GraphQLSchema;
  context: (initial: never) => Promise<Context>;
  logger: Logger;
  graphiql: boolean;
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
      return new GraphQLError(original.message, { ...where, extensions: { code: original.code } });
    }
    if (error instanceof GraphQLError && !error.originalError) return error;
    if (original instanceof GraphQLError) return original;
    logger.error({ err: original }, 'internal error');
    return new GraphQLError(message, { ...where, extensions: { code: 'INTERNAL_SERVER_ERROR' } });
  };
}

/** GraphQL over HTTP (queries, mutations) and GraphiQL at /graphql. */
export function createGraphQLServer(options: YogaOptions): Yoga {
  const { logger } = options;
  return createYoga<TransportContext, Context>({
    schema: options.schema,
    graphqlEndpoint: '/graphql',
    context: options.context as never,
    landingPage: false,
    healthCheckEndpoint: '/yoga-health',
    logging: {
      debug: (...args) => logger.debug(args.map(String).join(' ')),
      info: (...args) => logger.info(args.map(String).join(' ')),
      warn: (...args) => logger.warn(args.map(String).join(' ')),
      error: (...args) => logger.error(args.map(String).join(' ')),
    },
    maskedErrors: { maskError: maskError(logger) },
    graphiql: options.graphiql
      ? {
          title: 'Switchboard',
          subscriptionsProtocol: 'WS',
          defaultQuery:
            '# Paste a token into the headers tab as {"Authorization": "Bearer <token>"}\n{\n  viewer {\n    userId\n    group\n  }\n}\n',
        }
      : false,
  });
}
