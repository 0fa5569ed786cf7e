import {
  type DocumentNode,
  type ExecutionResult,
  execute,
  GraphQLError,
  getOperationAST,
  type OperationTypeNode,
} from 'graphql';
import type { Connection } from '../net/connection.ts';
import type { Context, RequestInfo } from '../schema/context.ts';
import type { Admission } from './admission.ts';
import type { TransportContext } from './context.ts';
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
  /** Builds the GraphQL context of an operation (the same factory yoga uses over HTTP). */
  context: (initial: TransportContext) => Promise<Context>;
  /** Subscriptions run through it: one execution per event per operation group. */
  fanout: Fanout;
  maskError: (error: unknown, message: string) => Error;
  /** Bounds the operations being started at once (MAX_OPERATIONS_IN_FLIGHT). */
  admission: Admission;
}

/**
 * Runs GraphQL operations for the streaming transports, the same way for graphql-ws and
 * graphql-sse: parsed and validated by yoga's envelop (its parse and validate caches and the
 * graphql-armor limits, one instance for all operations) the first time an operation text
 * comes, then taken from the runner's own cache of valid documents; executed by graphql-js
 * with the context yoga's factory makes and errors masked as over HTTP. What only an HTTP
 * request needs (request parsing, response formatting, per-request plugin setup) is skipped: a
 * mutation on an open socket is a context, an execution and one frame. Results go to the
 * operation's sink as serialized JSON: a query or mutation gives one result and completes; a
 * subscription goes through the fan-out. An operation waits for its place among those being
 * started at once (see admission.ts): a mutation holds it until its result is sent, a
 * subscription until it is subscribed.
 */
export function createOperationRunner(options: OperationRunnerOptions) {
  const { yoga, fanout, maskError, admission } = options;
  // Parse and validate need no request: one envelop for every operation of the instance.
  let shared: ReturnType<Yoga['getEnveloped']> | null = null;
  const envelop = () => {
    shared ??= yoga.getEnveloped({} as never);
    return shared;
  };
  const masked = (result: ExecutionResult): ExecutionResult =>
    result.errors
      ? {
          ...result,
          errors: result.errors.map((e) => maskError(e, 'Unexpected error.') as GraphQLError),
        }
      : result;

  // Operation texts that parsed and validated, with their document: a client sends the same few
  // operations again and again, and over an open socket the text alone is the cache key, so a
  // known operation skips envelop's parse and validate hooks. Refusals are not kept, so each one
  // still reaches graphql-armor (and its report). Bounded: the oldest entry leaves first.
  const valid = new Map<string, DocumentNode>();

  /** Parses and validates; the document and its operation type, or the refusal. */
  function prepare(
    enveloped: ReturnType<Yoga['getEnveloped']>,
    params: OperationParams,
  ): Refused | { document: DocumentNode; type: OperationTypeNode } {
    let document = valid.get(params.query);
    const nul = nulError(document ? { variables: params.variables } : params);
    if (nul) return { errors: [nul] };
    if (document === undefined) {
      const parsed = parseAndValidate(enveloped, params.query);
      if ('errors' in parsed) return parsed;
      document = parsed.document;
      valid.set(params.query, document);
      if (valid.size > VALID_DOCUMENTS) valid.delete(valid.keys().next().value as string);
    }
    const operation = getOperationAST(document, params.operationName);
    if (!operation) {
      const named = params.operationName ? ` named "${params.operationName}"` : '';
      return { errors: [new GraphQLError(`Unable to identify the operation${named}`)] };
    }
    return { document, type: operation.operation };
  }

  /** Prepares and runs one operation once it has its place (see `start`). */
  async function run(
    connection: Connection,
    info: RequestInfo,
    params: OperationParams,
    sink: OperationSink,
    mutations: boolean,
  ): Promise<Started> {
    const enveloped = envelop();
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
      contextValue: await options.context({
        viewer: connection.viewer,
        connection,
        requestInfo: info,
      }),
    };
    if (prepared.type === 'subscription') {
      const started = await fanout.subscribe({ args, maskError, query: params.query }, sink);
      return 'stop' in started ? started : single(started, sink);
    }
    return single(masked(await execute(args)), sink);
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
      const place = admission.take() ?? (await admission.wait());
      try {
        // Waited while the client went away: nothing to run, nobody to answer.
        if (connection.closed) return DONE;
        return await run(connection, info, params, sink, mutations);
      } finally {
        admission.release(place);
      }
    },
  };
}

/** Operation texts whose validated documents are kept (as many as envelop's own cache). */
const VALID_DOCUMENTS = 1000;

/** Parses and validates `query` with envelop (its caches, the graphql-armor limits). */
function parseAndValidate(
  enveloped: ReturnType<Yoga['getEnveloped']>,
  query: string,
): Refused | { document: DocumentNode } {
  let document: DocumentNode;
  try {
    document = enveloped.parse(query);
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
  return errors.length > 0 ? { errors } : { document };
}

/** A single result: one `next`, then `complete`; there is nothing to stop afterwards. */
function single(result: ExecutionResult, sink: OperationSink): Running {
  sink.next(JSON.stringify(result));
  sink.complete();
  return DONE;
}

const DONE: Running = { stop() {} };

export type OperationRunner = ReturnType<typeof createOperationRunner>;
