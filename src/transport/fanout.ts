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
import { type Consumer, publishTimeOf, Subscription } from '../pubsub/index.ts';

/**
 * Where the results of one operation go: a protocol's frames for that operation (graphql-ws
 * `next`/`complete`, SSE `next`/`complete` events), written to the connection's bounded wire.
 */
export interface OperationSink {
  /** One result, already serialized (the JSON of an ExecutionResult). */
  next(resultJson: string): void;
  /** The operation ended on the server's side: its source ended or the connection closed. */
  complete(): void;
}

/** The last frame encoded (see `encodeFrame`). */
let last = { prefix: '', json: '', suffix: '', frame: Buffer.alloc(0) };

/**
 * `prefix + json + suffix` as UTF-8 bytes, encoded once while consecutive calls are equal: the
 * fan-out writes one event to every subscriber of a group in a row, and their frames differ
 * only by the operation id in the prefix, which clients that number their operations share.
 */
export function encodeFrame(prefix: string, json: string, suffix = '}'): Buffer {
  if (last.json === json && last.prefix === prefix && last.suffix === suffix) return last.frame;
  const frame = Buffer.from(`${prefix}${json}${suffix}`);
  last = { prefix, json, suffix, frame };
  return frame;
}

/** A running operation. */
export interface Running {
  /** Stops it (the client completed it or went away); the sink's `complete` is not called. */
  stop(): void;
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
  /** Per event object: group -> serialized result (or its pending promise). */
  const results = new WeakMap<object, Map<Group, string | Promise<string>>>();
  const groups = new Map<string, Group>();
  let executions = 0;

  /**
   * Subscribers of the same operation text, operation name and variables. The group holds what
   * per-event execution needs, once for all of them; the subscribe-time context is not kept
   * (see EVENT_CONTEXT).
   */
  class Group {
    readonly #args: Pick<ExecutionArgs, 'schema' | 'document' | 'variableValues' | 'operationName'>;
    readonly #maskError: FanoutRequest['maskError'];
    /** The root field, the label of the subscriptions gauge. */
    readonly field: string;

    constructor(args: ExecutionArgs, maskError: FanoutRequest['maskError']) {
      const { schema, document, variableValues, operationName } = args;
      this.#args = { schema, document, variableValues, operationName };
      this.#maskError = maskError;
      this.field = rootFieldOf(args);
    }

    masked(result: ExecutionResult): ExecutionResult {
      if (!result.errors) return result;
      const maskError = this.#maskError;
      const errors = result.errors.map((e) => maskError(e, 'Unexpected error.') as GraphQLError);
      return { ...result, errors };
    }

    /** The serialized result of `event`, executed once per event for the whole group. */
    resultFor(event: unknown): string | Promise<string> {
      if (typeof event !== 'object' || event === null) return this.#run(event);
      let byGroup = results.get(event);
      if (!byGroup) {
        byGroup = new Map();
        results.set(event, byGroup);
      }
      let result = byGroup.get(this);
      if (result === undefined) {
        result = this.#run(event);
        byGroup.set(this, result);
      }
      return result;
    }

    #run(event: unknown): string | Promise<string> {
      executions += 1;
      metrics.executions.inc();
      // Once per event per group: the publish time travels with the event (pubsub envelope).
      const publishedAt = publishTimeOf(event);
      if (publishedAt !== undefined) {
        metrics.deliveryLatency.observe(Math.max(0, Date.now() - publishedAt) / 1000);
      }
      // graphql-js' own per-event step (what `subscribe` maps every event through), once.
      const result = execute({ ...this.#args, contextValue: EVENT_CONTEXT, rootValue: event });
      return isPromiseLike(result)
        ? Promise.resolve(result).then((r) => JSON.stringify(this.masked(r)))
        : JSON.stringify(this.masked(result));
    }
  }

  const groupOf = ({ query, args, maskError }: FanoutRequest): Group => {
    const key = `${args.operationName ?? ''}\u0000${query}\u0000${JSON.stringify(args.variableValues ?? {})}`;
    let group = groups.get(key);
    if (group === undefined) {
      group = new Group(args, maskError);
      // The map is bounded by the distinct operations clients send; a cap keeps a client that
      // sends endless distinct variables from growing it (beyond it, groups are not shared).
      if (groups.size < 100_000) groups.set(key, group);
    }
    return group;
  };

  /**
   * One subscriber: writes its group's results to its sink in event order, and tells the sink
   * when the subscription ends on the server's side. Also what stops it.
   */
  class Delivery implements Consumer<unknown>, Running {
    readonly #group: Group;
    readonly #subscription: Subscription<unknown>;
    readonly #sink: OperationSink;
    /** Results that need async execution keep their order behind this tail. */
    #tail: Promise<void> | null = null;
    #stopped = false;

    constructor(group: Group, subscription: Subscription<unknown>, sink: OperationSink) {
      this.#group = group;
      this.#subscription = subscription;
      this.#sink = sink;
      metrics.subscriptions.inc({ field: group.field });
    }

    take(event: unknown): void {
      const result = this.#group.resultFor(event);
      if (typeof result === 'string' && this.#tail === null) {
        this.#emit(result);
        return;
      }
      const previous: Promise<void> = this.#tail ?? Promise.resolve();
      const next: Promise<void> = previous
        .then(() => result)
        .then((json) => {
          if (!this.#subscription.done) this.#emit(json);
        })
        .finally(() => {
          if (this.#tail === next) this.#tail = null;
        });
      this.#tail = next;
    }

    ended(): void {
      metrics.subscriptions.dec({ field: this.#group.field });
      if (!this.#stopped) this.#sink.complete();
    }

    stop(): void {
      this.#stopped = true;
      this.#subscription.end();
    }

    #emit(json: string): void {
      metrics.tally.deliveries += 1;
      this.#sink.next(json);
    }
  }

  return {
    /** Results executed so far (a test counts them: one per event per group). */
    get executions() {
      return executions;
    },

    /**
     * Starts a subscription operation and delivers at once: its first events may reach `sink`
     * before this resolves. Resolves the refusal (an ExecutionResult with errors) when the
     * subscribe resolver throws, or the running subscription.
     */
    async subscribe(
      request: FanoutRequest,
      sink: OperationSink,
    ): Promise<ExecutionResult | Running> {
      const group = groupOf(request);
      const source = await createSourceEventStream(request.args);
      if (!(Symbol.asyncIterator in source)) return group.masked(source);
      const subscription =
        source instanceof Subscription ? (source as Subscription<unknown>) : adopt(source);
      const delivery = new Delivery(group, subscription, sink);
      subscription.drain(delivery);
      return delivery;
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
