import {
  createSourceEventStream,
  type ExecutionArgs,
  type ExecutionResult,
  execute,
  type GraphQLError,
  getOperationAST,
  Kind,
} from 'graphql';
import type { Metrics } from '../metrics.ts';
import { publishTimeOf, Subscription } from '../pubsub/index.ts';

/** Writes one serialized result (the JSON of an ExecutionResult) to the subscriber's wire. */
export type Emit = (resultJson: string) => void;

/**
 * A running fan-out subscription as the protocol layers (graphql-ws, graphql-sse) see it: an
 * async iterable that yields nothing and completes when the subscription ends, so the protocol
 * still sends `complete` and still ends the subscription on the client's `complete` or
 * disconnect. Results are written by `Emit`, never through the iterator.
 */
export class FanoutStream implements AsyncIterableIterator<never> {
  readonly #source: Subscription<unknown>;
  readonly #start: () => void;
  #started = false;

  constructor(source: Subscription<unknown>, start: () => void) {
    this.#source = source;
    this.#start = start;
  }

  /** Starts delivery (at the protocol's first pull, once it has registered the operation). */
  next(): Promise<IteratorResult<never>> {
    if (!this.#started) {
      this.#started = true;
      this.#start();
    }
    return new Promise((resolve) =>
      this.#source.onEnd(() => resolve({ value: undefined, done: true })),
    );
  }

  return(): Promise<IteratorResult<never>> {
    this.#source.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(): Promise<IteratorResult<never>> {
    return this.return();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** What a fan-out subscribe needs besides the execution arguments. */
export interface FanoutRequest {
  args: ExecutionArgs;
  /** Masks errors (a refused subscribe, a failing field) the way the HTTP path does. */
  maskError: (error: unknown, message: string) => Error;
  /** The operation text, part of the cache key (parsed documents are shared per text). */
  query: string;
}

/**
 * One event, one execution: a published event is executed and serialized once per distinct
 * (operation, variables) and the same JSON goes to every subscriber of that group on this
 * instance. Visibility is the domain's job: a domain stream yields the same event object to
 * every subscriber that may see the same thing, and distinct objects where what they see
 * differs (a per-viewer autoupdate batch, an INVISIBLE ping for its own user). So the cache is
 * keyed by event object identity, and subscription payload resolvers must not read the
 * context (they resolve from the event alone).
 */
export function createFanout(metrics: Metrics) {
  /** Per event object: group id -> serialized result (or its pending promise). */
  const results = new WeakMap<object, Map<number, string | Promise<string>>>();
  const groups = new Map<string, number>();
  let executions = 0;

  const groupOf = (query: string, args: ExecutionArgs) => {
    const key = `${args.operationName ?? ''}\u0000${query}\u0000${JSON.stringify(args.variableValues ?? {})}`;
    let id = groups.get(key);
    if (id === undefined) {
      id = groups.size;
      // The map is bounded by the distinct operations clients send; a cap keeps a client that
      // sends endless distinct variables from growing it (beyond it, groups are not shared).
      if (groups.size < 100_000) groups.set(key, id);
    }
    return id;
  };

  return {
    /** Results executed so far (a test counts them: one per event per group). */
    get executions() {
      return executions;
    },

    /**
     * Starts a subscription operation. Returns the refusal (an ExecutionResult with errors)
     * when the subscribe resolver throws, or a FanoutStream that writes through `emit`.
     */
    async subscribe(
      request: FanoutRequest,
      emitResult: Emit,
    ): Promise<ExecutionResult | FanoutStream> {
      const { args } = request;
      const emit: Emit = (json) => {
        metrics.tally.deliveries += 1;
        emitResult(json);
      };
      const masked = (result: ExecutionResult): ExecutionResult =>
        result.errors
          ? {
              ...result,
              errors: result.errors.map(
                (error) => request.maskError(error, 'Unexpected error.') as GraphQLError,
              ),
            }
          : result;
      const source = await createSourceEventStream(args);
      if (!(Symbol.asyncIterator in source)) return masked(source);
      const subscription =
        source instanceof Subscription ? (source as Subscription<unknown>) : adopt(source);
      const group = groupOf(request.query, args);
      // What per-event execution needs; the subscribe-time context is not kept (see EVENT_CONTEXT).
      const { schema, document, variableValues, operationName } = args;
      const field = rootFieldOf(args);
      metrics.subscriptions.inc({ field });
      subscription.onEnd(() => metrics.subscriptions.dec({ field }));

      const run = (event: unknown): string | Promise<string> => {
        executions += 1;
        metrics.executions.inc();
        // Once per event per group: the publish time travels with the event (pubsub envelope).
        const publishedAt = publishTimeOf(event);
        if (publishedAt !== undefined) {
          metrics.deliveryLatency.observe(Math.max(0, Date.now() - publishedAt) / 1000);
        }
        // graphql-js' own per-event step (what `subscribe` maps every event through), once.
        const result = execute({
          schema,
          document,
          variableValues,
          operationName,
          contextValue: EVENT_CONTEXT,
          rootValue: event,
        });
        return isPromiseLike(result)
          ? Promise.resolve(result).then((r) => JSON.stringify(masked(r)))
          : JSON.stringify(masked(result));
      };
      const resultFor = (event: unknown): string | Promise<string> => {
        if (typeof event !== 'object' || event === null) return run(event);
        let byGroup = results.get(event);
        if (!byGroup) {
          byGroup = new Map();
          results.set(event, byGroup);
        }
        let result = byGroup.get(group);
        if (result === undefined) {
          result = run(event);
          byGroup.set(group, result);
        }
        return result;
      };

      // Results that need async execution keep their order behind this tail.
      let tail: Promise<void> | null = null;
      const deliver = (event: unknown) => {
        const result = resultFor(event);
        if (typeof result === 'string' && tail === null) return emit(result);
        const previous: Promise<void> = tail ?? Promise.resolve();
        const next: Promise<void> = previous
          .then(() => result)
          .then((json) => {
            if (!subscription.done) emit(json);
          })
          .finally(() => {
            if (tail === next) tail = null;
          });
        tail = next;
      };
      return new FanoutStream(subscription, () => subscription.drain(deliver));
    },
  };
}

export type Fanout = ReturnType<typeof createFanout>;

/** The root field of a subscription operation, the label of the subscriptions gauge. */
function rootFieldOf(args: ExecutionArgs): string {
  const first = getOperationAST(args.document, args.operationName)?.selectionSet.selections[0];
  return first?.kind === Kind.FIELD ? first.name.value : 'unknown';
}

/**
 * The context of per-event execution. Its result is shared by every subscriber of the group, so
 * payload resolvers must resolve from the event alone; reading the context is a bug, and this
 * says so loudly instead of leaking one subscriber's context into everyone's result.
 */
const EVENT_CONTEXT = new Proxy(
  {},
  {
    get(_target, key) {
      if (typeof key === 'symbol') return undefined;
      throw new Error(`subscription payload resolvers must not read the context (read "${key}")`);
    },
  },
);

const isPromiseLike = (value: unknown): value is PromiseLike<unknown> =>
  typeof (value as PromiseLike<unknown> | null)?.then === 'function';

/** Wraps a foreign async iterable (not a domain Subscription) so it can be drained. */
function adopt(source: AsyncIterable<unknown>): Subscription<unknown> {
  const subscription = new Subscription<unknown>({ capacity: Number.MAX_SAFE_INTEGER });
  const iterator = source[Symbol.asyncIterator]();
  subscription.onEnd(() => void iterator.return?.());
  void (async () => {
    try {
      for (;;) {
        const { value, done } = await iterator.next();
        if (done || !subscription.push(value)) break;
      }
    } finally {
      subscription.end();
    }
  })();
  return subscription;
}
