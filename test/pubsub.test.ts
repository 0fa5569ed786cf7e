import { afterEach, describe, expect, it } from 'vitest';
import { type NotifyEnvelope, topic } from '../src/domain/events.ts';
import { createLogger } from '../src/logger.ts';
import {
  connectRedis,
  createMemoryPubSub,
  createRedisPubSub,
  type Ending,
  type Owner,
  type PubSub,
  type RedisClients,
} from '../src/pubsub/index.ts';
import { requireRedis } from './support/redis.ts';
import { useStoreBackends } from './support/stores.ts';

const logger = createLogger('silent');
const WAIT_MS = 5_000;

const envelope = (name: string, extra: Partial<NotifyEnvelope> = {}): NotifyEnvelope => ({
  senderUserId: '1',
  senderChannelId: 'abcdefgh:1:1',
  name,
  message: null,
  toAll: true,
  toMeeting: null,
  toUsers: [],
  toChannels: [],
  ...extra,
});

async function take<T>(
  iterator: AsyncIterator<T>,
  timeoutMs = WAIT_MS,
): Promise<IteratorResult<T>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`nothing within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([iterator.next(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

interface Backend {
  /** Two pub/subs as two instances would have them (the same one for memory). */
  pair(): Promise<[PubSub, PubSub, () => Promise<void>]>;
}

const backends: [string, Backend][] = [
  [
    'memory',
    {
      pair: async () => {
        const pubsub = createMemoryPubSub();
        return [pubsub, pubsub, () => pubsub.close()];
      },
    },
  ],
  [
    'redis',
    {
      pair: async () => {
        const { url, prefix } = await requireRedis();
        const clients: RedisClients[] = [
          await connectRedis({ url }, logger),
          await connectRedis({ url }, logger),
        ];
        const [a, b] = clients.map((c) => createRedisPubSub(c, { prefix, logger })) as [
          PubSub,
          PubSub,
        ];
        return [a, b, async () => void (await Promise.all([a.close(), b.close()]))];
      },
    },
  ],
];

// The pub/sub contract also runs on a Redis Cluster (sharded channels spread over its masters).
const pubsubBackends: [string, Backend][] = [
  ...backends,
  ...useStoreBackends()
    .filter(([name]) => name === 'cluster')
    .map(([name, connect]): [string, Backend] => [
      name,
      {
        pair: async () => {
          const backend = await connect();
          const second = await backend.connectAgain();
          const [a, b] = [backend.redis, second].map((clients) =>
            createRedisPubSub(clients as RedisClients, { prefix: backend.prefix, logger }),
          ) as [PubSub, PubSub];
          return [a, b, async () => void (await Promise.all([a.close(), b.close()]))];
        },
      },
    ]),
];

describe.each(pubsubBackends)('pub/sub contract: %s', (_name, backend) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });
  const pair = async () => {
    const [a, b, close] = await backend.pair();
    cleanups.push(close);
    return [a, b] as const;
  };

  it('delivers initial events first, then published ones, filtered and mapped', async () => {
    const [a, b] = await pair();
    const sub = b.subscribe<NotifyEnvelope, string>(topic('notify'), {
      capacity: 10,
      initial: ['hello'],
      filter: (e) => e.name !== 'skip',
      map: (e) => e.name,
    });
    await waitForTopic(b, 1);
    await a.publish(topic('notify'), envelope('skip'));
    await a.publish(topic('notify'), envelope('one'));
    await a.publish(topic('notify'), envelope('two'));
    expect((await take(sub)).value).toBe('hello');
    expect((await take(sub)).value).toBe('one');
    expect((await take(sub)).value).toBe('two');
    await sub.return();
  });

  it('keeps topics apart', async () => {
    const [a, b] = await pair();
    const m1 = b.subscribe(topic('membership', 'x'), { capacity: 10 });
    const m2 = b.subscribe(topic('membership', 'y'), { capacity: 10 });
    await waitForTopic(b, 2);
    await a.publish(topic('membership', 'y'), { set: 'y', member: '1', present: true });
    await a.publish(topic('membership', 'x'), { set: 'x', member: '2', present: true });
    expect((await take(m1)).value).toEqual({ set: 'x', member: '2', present: true });
    expect((await take(m2)).value).toEqual({ set: 'y', member: '1', present: true });
    m1.end();
    m2.end();
  });

  it('ends a subscriber that falls behind instead of buffering without bound', async () => {
    const [a, b] = await pair();
    let overflows = 0;
    const sub = b.subscribe(topic('notify'), { capacity: 3, onOverflow: () => overflows++ });
    const other = b.subscribe(topic('notify'), { capacity: 100 });
    await waitForTopic(b, 1);
    for (let i = 0; i < 10; i++) await a.publish(topic('notify'), envelope(`m${i}`));
    // The healthy subscriber gets all ten; the slow one was cut off once, buffer dropped.
    for (let i = 0; i < 10; i++) expect((await take(other)).value?.name).toBe(`m${i}`);
    expect(overflows).toBe(1);
    expect(sub.done).toBe(true);
    expect((await take(sub)).done).toBe(true);
    other.end();
  });

  it('ends when its owner closes and on return, even while waiting, and releases the topic', async () => {
    const [, b] = await pair();
    // An owner as a connection is one: it ends what it holds when it closes.
    const held: Ending[] = [];
    const owner: Owner = {
      closed: false,
      hold: (item) => void held.push(item),
      release: (item) => void held.splice(held.indexOf(item), 1),
      overflow: () => {},
    };
    const owned = b.subscribe(topic('notify'), { capacity: 10, owner });
    const returned = b.subscribe(topic('notify'), { capacity: 10 });
    expect(b.topicCount()).toBe(1);
    expect(held).toEqual([owned]);
    const waiting = [take(owned), take(returned)];
    for (const item of held.slice()) item.end();
    expect(held).toEqual([]);
    await returned.return();
    for (const result of await Promise.all(waiting)) expect(result.done).toBe(true);
    expect(b.topicCount()).toBe(0);
  });
});

describe('redis pub/sub failures', () => {
  it('rejects a publish it cannot deliver instead of dropping it', async () => {
    const { url, prefix } = await requireRedis();
    const clients = await connectRedis({ url }, logger);
    const pubsub = createRedisPubSub(clients, { prefix, logger });
    clients.command.disconnect();
    await expect(pubsub.publish(topic('notify'), envelope('lost'))).rejects.toThrow();
    await pubsub.close();
  });

  it('refuses to start against an unreachable Redis with a clear error', async () => {
    await expect(connectRedis({ url: 'redis://127.0.0.1:1' }, logger)).rejects.toThrow(/REDIS_URL/);
  });
});

async function waitForTopic(pubsub: PubSub, count: number) {
  // Redis confirms SUBSCRIBE asynchronously; a PING on the subscriber connection is answered
  // after it, so once ping resolves the subscription is live.
  expect(pubsub.topicCount()).toBe(count);
  await pubsub.ping();
}
