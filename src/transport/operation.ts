import {
  type DocumentNode,
  type ExecutionResult,
  GraphQLError,
  getOperationAST,
  type OperationTypeNode,
} from 'graphql';
import type { Connection } from '../net/connection.ts';
import type { RequestInfo } from '../schema/context.ts';
import type { Fanout, OperationSink, Running } from './fanout.ts';
import { nulError } from './input.ts';
import type { Yoga } from './yoga.ts';

/** The parameters of one GraphQL operation as a client sends them (graphql-ws, graphql-sse). */
export interface OperationParams {
  query: string;
  variables?: Record<string, unknown> | null | undefined;
  operationName?: string | null | undefined;
  extensions?: Record<string, unknown> | null | undefined;
}

/** An operation refused before it ran (parse or validation errors, bad input). */
export interface Refused {
  errors: readonly GraphQLError[];
}

/** What `start` resolves: the refusal, or the running operation. */
export type Started = Refused | Running;

export const isRefused = (started: Started): started is Refused => 'errors' in started;

export interface OperationRunnerOptions {
  yoga: Yoga;
  /** Subscriptions run through it: one execution per event per operation group. */
  fanout: Fanout;
  maskError: (error: unknown, message: string) => Error;
}

/**
 * Runs GraphQL operations for the streaming transports on yoga's envelop (its parse and validate
 * caches, graphql-armor limits, error masking, the context factory), the same way for
 * graphql-ws and graphql-sse. Results go to the operation's sink as serialized JSON: a query or
 * mutation gives one result and completes; a subscription goes through the fan-out.
 */
export function createOperationRunner(options: OperationRunnerOptions) {
  const { yoga, fanout, maskError } = options;

  /** Parses and validates; the document and its operation type, or the refusal. */
  function prepare(
    enveloped: ReturnType<Yoga['getEnveloped']>,
    params: OperationParams,
  ): Refused | { document: DocumentNode; type: OperationTypeNode } {
    const nul = nulError(params);
    if (nul) return { errors: [nul] };
    let document: DocumentNode;
    try {
      document = enveloped.parse(params.query);
    } catch (error) {
      return { errors: [error as GraphQLError] };
    }
    // graphql-armor's limits throw their GraphQLError from validate rather than return it.
    let errors: readonly GraphQLError[];
    try {
      errors = enveloped.validate(enveloped.schema, document);
    } catch (error) {
      if (error instanceof GraphQLError) return { errors: [error] };
      throw error;
    }
    if (errors.length > 0) return { errors };
    const operation = getOperationAST(document, params.operationName);
    if (!operation) {
      const named = params.operationName ? ` named "${params.operationName}"` : '';
      return { errors: [new GraphQLError(`Unable to identify the operation${named}`)] };
    }
    return { document, type: operation.operation };
  }

  return {
    /**
     * Runs one operation as `connection`'s viewer. Resolves its refusal (nothing was sent to
     * `sink`) or the running operation; results may reach `sink` before it resolves. With
     * `mutations: false` (GraphQL over GET) a mutation is refused.
     */
    async start(
      connection: Connection,
      info: RequestInfo,
      params: OperationParams,
      sink: OperationSink,
      { mutations = true }: { mutations?: boolean } = {},
    ): Promise<Started> {
      const enveloped = yoga.getEnveloped({
        viewer: connection.viewer,
        connection,
        requestInfo: info,
        params,
      } as never);
      const prepared = prepare(enveloped, params);
      if ('errors' in prepared) return prepared;
      if (!mutations && prepared.type === 'mutation') {
        return { errors: [new GraphQLError('Cannot perform mutations over GET')] };
      }
      const args = {
        schema: enveloped.schema,
        document: prepared.document,
        operationName: params.operationName ?? null,
        variableValues: params.variables ?? null,
        contextValue: await enveloped.contextFactory(),
      };
      if (prepared.type === 'subscription') {
        const started = await fanout.subscribe({ args, maskError, query: params.query }, sink);
        return 'stop' in started ? started : single(started, sink);
      }
      return single((await enveloped.execute(args)) as ExecutionResult, sink);
    },
  };
}

/** A single result: one `next`, then `complete`; there is nothing to stop afterwards. */
function single(result: ExecutionResult, sink: OperationSink): Running {
  sink.next(JSON.stringify(result));
  sink.complete();
  return DONE;
}

const DONE: Running = { stop() {} };

export type OperationRunner = ReturnType<typeof createOperationRunner>;
