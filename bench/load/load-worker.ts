/**
 * A load process of the cluster phase, forked by bench/load/load-pool.ts: it opens its share of
 * the graphql-ws subscribers (one socket each, so fewer than 18,000 per process under the 20,000
 * open files a process may have) and tells the pool when every one of them had an expected
 * event. Each delivery's time travels as epoch milliseconds (`performance.timeOrigin + now`),
 * so the pool can compare the clocks of its processes with the moment it published.
 */
import { SUBSCRIBER_QUERY } from '../protocol.ts';
import { DeliveryLog } from './deliveries.ts';
import type { PoolCommand, WorkerReport } from './load-pool.ts';
import { closeMany, openMany, type Subscriber } from './subscriber.ts';
import { openWsSubscriber } from './ws-subscriber.ts';

const send = (report: WorkerReport) => process.send?.(report);
let log: DeliveryLog | null = null;
let subscribers: Subscriber[] = [];

async function open(command: Extract<PoolCommand, { type: 'open' }>): Promise<void> {
  const { from, count, urls, tokens, sourceAddresses } = command;
  const delivery = new DeliveryLog(count, true, command.stallMs);
  log = delivery;
  const sink = {
    deliver: delivery.deliver,
    lost: (error: Error) => {
      delivery.fail(error);
      send({ type: 'lost', message: error.message });
    },
  };
  subscribers = await openMany(
    count,
    (local) => {
      const index = from + local;
      return openWsSubscriber({
        url: urls[index % urls.length] as string,
        token: tokens[index % tokens.length] as string,
        query: SUBSCRIBER_QUERY,
        sink,
        localAddress: sourceAddresses[index % sourceAddresses.length] as string,
      });
    },
    { concurrency: command.concurrency },
  );
  send({ type: 'opened', count: subscribers.length });
}

function expect(seq: number, withTimes: boolean): void {
  const delivery = log;
  if (!delivery) throw new Error('expect before open');
  delivery.expect(seq);
  send({ type: 'expecting', seq });
  delivery.complete(seq).then(
    () => {
      const times = delivery.timesOf(seq);
      let last = 0;
      for (const at of times) last = Math.max(last, at);
      send({
        type: 'complete',
        seq,
        delivered: delivery.countOf(seq),
        lastAt: performance.timeOrigin + last,
        times: withTimes ? times.map((at) => performance.timeOrigin + at) : null,
      });
    },
    (error: Error) =>
      send({ type: 'incomplete', seq, delivered: delivery.countOf(seq), message: error.message }),
  );
}

async function close(): Promise<void> {
  log?.close();
  await closeMany(subscribers, 30_000);
  subscribers = [];
  send({ type: 'closed' });
}

process.on('message', (command: PoolCommand) => {
  const failed = (error: unknown) =>
    send({ type: 'error', message: error instanceof Error ? error.message : String(error) });
  try {
    switch (command.type) {
      case 'open':
        open(command).catch(failed);
        break;
      case 'expect':
        expect(command.seq, command.withTimes);
        break;
      case 'close':
        close().catch(failed);
        break;
    }
  } catch (error) {
    failed(error);
  }
});
// The pool went away (the bench was killed): nothing is left holding sockets.
process.on('disconnect', () => process.exit(0));
process.on('unhandledRejection', (reason) => {
  const message = reason instanceof Error ? (reason.stack ?? reason.message) : String(reason);
  send({ type: 'error', message: `unhandled rejection: ${message}` });
});
