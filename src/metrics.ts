import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Prometheus metrics of one server instance, served at /metrics. One registry per app, so
 * several apps in one process (tests) keep their numbers apart. docs/operations.md lists every metric.
 */
export interface Metrics {
  registry: Registry;
  /** Open client connections by transport (graphql-ws, sse, http streams, legacy sockets). */
  connections: Gauge<'transport'>;
  /** Active subscriptions by root field (notify, applause, autoupdate, ...). */
  subscriptions: Gauge<'field'>;
  /** Events published by this instance, by event name. */
  eventsPublished: Counter<'event'>;
  /** Results written to subscribers (one per subscriber per event). */
  deliveries: Counter;
  /**
   * Plain counts bumped on the delivery hot path (a property increment instead of a labelled
   * prom-client call per subscriber per event); copied into their counters at scrape time.
   */
  tally: { deliveries: number };
  /** Executions of subscription results (one per event per distinct operation). */
  executions: Counter;
  /** Seconds from publish (on any instance) to the write to a subscriber on this one. */
  deliveryLatency: Histogram;
  /** Connections closed because they did not read their events in time (4499). */
  slowConsumers: Counter<'transport'>;
  /** Requests refused by a per-user rate limit, by operation. */
  rateLimited: Counter<'operation'>;
  /** Requests or connections refused by a size or count limit, by limit. */
  limitRejections: Counter<'limit'>;
  /** 1 when the dependency answered its last check, 0 when not. */
  dependencyUp: Gauge<'dependency'>;
  /** Operations waiting for a place among those started at once (MAX_OPERATIONS_IN_FLIGHT). */
  operationsWaiting: Gauge;
  /** Operations that ran longer than their place is held and stopped counting. */
  operationsLifted: Counter;
}

/**
 * Creates the metrics. `dependencies` are checked when Prometheus scrapes (bounded by the
 * checks' own timeouts), so `switchboard_dependency_up` is current.
 */
export function createMetrics(options: {
  connectionCounts: () => Record<string, number>;
  dependencies: Record<string, () => Promise<void>>;
  /** The admission of streaming operations (transport/admission.ts). */
  admission: { readonly waiting: number; readonly lifted: number };
}): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'switchboard_' });
  const registers = [registry];
  const tally = { deliveries: 0 };
  return {
    tally,
    registry,
    connections: new Gauge({
      name: 'switchboard_connections',
      help: 'Open client connections by transport.',
      labelNames: ['transport'],
      registers,
      collect() {
        this.reset();
        for (const [transport, count] of Object.entries(options.connectionCounts())) {
          this.set({ transport }, count);
        }
      },
    }),
    subscriptions: new Gauge({
      name: 'switchboard_subscriptions',
      help: 'Active subscriptions by root field.',
      labelNames: ['field'],
      registers,
    }),
    eventsPublished: new Counter({
      name: 'switchboard_events_published_total',
      help: 'Events published by this instance, by event name.',
      labelNames: ['event'],
      registers,
    }),
    deliveries: new Counter({
      name: 'switchboard_deliveries_total',
      help: 'Subscription results written to subscribers.',
      registers,
      collect() {
        this.reset();
        this.inc(tally.deliveries);
      },
    }),
    executions: new Counter({
      name: 'switchboard_executions_total',
      help: 'Subscription results executed (once per event per distinct operation).',
      registers,
    }),
    deliveryLatency: new Histogram({
      name: 'switchboard_delivery_latency_seconds',
      help: 'Seconds from publish (any instance) to the write to a subscriber on this instance.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    slowConsumers: new Counter({
      name: 'switchboard_slow_consumers_total',
      help: 'Connections closed as slow consumers (4499), by transport.',
      labelNames: ['transport'],
      registers,
    }),
    rateLimited: new Counter({
      name: 'switchboard_rate_limited_total',
      help: 'Requests refused by a per-user rate limit, by operation.',
      labelNames: ['operation'],
      registers,
    }),
    limitRejections: new Counter({
      name: 'switchboard_limit_rejections_total',
      help: 'Requests or connections refused by a size or count limit, by limit.',
      labelNames: ['limit'],
      registers,
    }),
    dependencyUp: new Gauge({
      name: 'switchboard_dependency_up',
      help: '1 when the dependency answered its last check, else 0.',
      labelNames: ['dependency'],
      registers,
      async collect() {
        await Promise.all(
          Object.entries(options.dependencies).map(async ([dependency, check]) => {
            try {
              await check();
              this.set({ dependency }, 1);
            } catch {
              this.set({ dependency }, 0);
            }
          }),
        );
      },
    }),
    operationsWaiting: new Gauge({
      name: 'switchboard_operations_waiting',
      help: 'graphql-ws and SSE operations waiting for a place (MAX_OPERATIONS_IN_FLIGHT).',
      registers,
      collect() {
        this.set(options.admission.waiting);
      },
    }),
    operationsLifted: new Counter({
      name: 'switchboard_operations_lifted_total',
      help: 'Operations still running when their place was given to the next (held too long).',
      registers,
      collect() {
        this.reset();
        this.inc(options.admission.lifted);
      },
    }),
  };
}
