import { PUBLISHER_QUERY, SUBSCRIBER_QUERY } from '../protocol.ts';
import type { ServerUnderTest } from '../servers/index.ts';
import { DeliveryLog } from './deliveries.ts';
import { createPublisher, type Publisher } from './publisher.ts';
import { openSseSubscriber, type SseMode } from './sse-subscriber.ts';
import type { DeliverySink, OpenSubscriber, Subscriber } from './subscriber.ts';
import { openWsSubscriber } from './ws-subscriber.ts';

/** Load subscribers are spread over this many user ids. */
const USERS = 300;
const userOf = (index: number) => `bench-user-${index % USERS}`;
/**
 * Loopback source addresses subscribers connect from, round-robin: one address has about
 * 28 000 ephemeral ports, and sockets of earlier phases may still sit in TIME_WAIT.
 */
const SOURCE_ADDRESSES = 8;
export const sourceAddress = (index: number) => `127.0.0.${2 + (index % SOURCE_ADDRESSES)}`;

/** A server under test with its publisher ready: a live notify subscription and its channel. */
export interface BenchTarget {
  server: ServerUnderTest;
  pids: number[];
  publisher: Publisher;
  /** The publisher's token and NotifyChannel id (for publishes built elsewhere). */
  publisherToken: string;
  channelId: string;
  /** A fresh event number (never reused within a target). */
  nextSeq(): number;
  /** The log of the running phase: a lost publisher subscription fails it. */
  setPhase(log: DeliveryLog | null): void;
  /** graphql-ws subscribers running SUBSCRIBER_QUERY, spread over the processes round-robin. */
  wsOpener(sink: DeliverySink): OpenSubscriber;
  /** graphql-sse subscribers in `mode`, spread the same way. */
  sseOpener(mode: SseMode, sink: DeliverySink): OpenSubscriber;
  close(): Promise<void>;
}

const wsUrl = (httpUrl: string) => `${httpUrl.replace(/^http/, 'ws')}/graphql`;

/** A sink that counts into `log` and fails it when a subscriber is lost. */
export const sinkOf = (log: DeliveryLog): DeliverySink => ({
  deliver: log.deliver,
  lost: (error) => log.fail(error),
});

/**
 * Prepares a server: opens the publisher's own notify subscription on the first process (the
 * publish mutation needs its channel id), then publishes one warm-up event and waits for it, so
 * schema, resolvers and code paths are warm before anything is measured.
 */
export async function prepareTarget(
  server: ServerUnderTest,
  payloadBytes: number,
  options: { publishTimeoutMs?: number } = {},
): Promise<BenchTarget> {
  const [first] = server.processes;
  if (!first) throw new Error(`${server.name} has no process`);
  const own = new DeliveryLog(1, false, 10_000);
  let phase: DeliveryLog | null = null;
  let publisherSubscription: Subscriber | undefined;
  let publisher: Publisher | undefined;
  let token = '';
  let channelId = '';
  const close = async () => {
    own.close();
    publisher?.close();
    await publisherSubscription?.close();
  };
  try {
    token = await server.token('bench-publisher');
    publisherSubscription = await openWsSubscriber({
      url: wsUrl(first.url),
      token,
      query: PUBLISHER_QUERY,
      sink: {
        deliver: own.deliver,
        lost: (error) => {
          const lost = new Error(`the publisher's subscription was lost: ${error.message}`);
          own.fail(lost);
          phase?.fail(lost);
        },
      },
    });
    channelId = publisherSubscription.channelId ?? '';
    if (!channelId) throw new Error(`${server.name}: the publisher got no NotifyChannel`);
    publisher = createPublisher({
      url: first.url,
      token,
      channelId,
      payloadBytes,
      ...(options.publishTimeoutMs ? { timeoutMs: options.publishTimeoutMs } : {}),
    });
  } catch (error) {
    await close();
    throw error;
  }

  let seq = 0;
  const processOf = (index: number) => server.processes[index % server.processes.length] ?? first;
  const target: BenchTarget = {
    server,
    pids: server.processes.map((p) => p.pid),
    publisher,
    publisherToken: token,
    channelId,
    nextSeq: () => ++seq,
    setPhase: (log) => {
      phase = log;
    },
    wsOpener: (sink) => async (index) => {
      const token = await server.token(userOf(index));
      const url = wsUrl(processOf(index).url);
      return openWsSubscriber({
        url,
        token,
        query: SUBSCRIBER_QUERY,
        sink,
        localAddress: sourceAddress(index),
      });
    },
    sseOpener: (mode, sink) => async (index) => {
      const token = await server.token(userOf(index));
      const { url } = processOf(index);
      return openSseSubscriber({
        url,
        token,
        query: SUBSCRIBER_QUERY,
        mode,
        sink,
        localAddress: sourceAddress(index),
      });
    },
    close,
  };
  try {
    const warmup = target.nextSeq();
    own.expect(warmup);
    const { done } = publisher.publish(warmup);
    await Promise.all([done, own.complete(warmup)]);
  } catch (error) {
    await close();
    throw error;
  }
  return target;
}
