import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import type { ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import { NotifyDocument, type NotifySubscription, PublishDocument } from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { gql, type ResultQueue, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

/** One scrape of /metrics: `value(name, labels)` sums the samples whose labels include `labels`. */
async function scrape(server: TestServer) {
  const response = await fetch(`${server.url}/metrics`, { signal: AbortSignal.timeout(WAIT_MS) });
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
  const text = await response.text();
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!match) continue;
    const labels: Record<string, string> = {};
    for (const [, key, raw] of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key as string] = raw as string;
    }
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return {
    text,
    /** Names with a `# HELP` line. */
    names: [...text.matchAll(/^# HELP (\S+)/gm)].map((m) => m[1] as string),
    value(name: string, labels: Record<string, string> = {}): number {
      return samples
        .filter((s) => s.name === name)
        .filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))
        .reduce((sum, s) => sum + s.value, 0);
    },
  };
}

/** Scrapes until `check` passes (the server updates some gauges a moment after the client). */
async function eventually(
  server: TestServer,
  check: (m: Awaited<ReturnType<typeof scrape>>) => void,
) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const metrics = await scrape(server);
    try {
      return check(metrics);
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}

/** A masked client text frame (RFC 6455), payload under 64 KiB. */
function clientFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  const length =
    payload.length < 126
      ? Buffer.from([0x80 | payload.length])
      : Buffer.from([0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const masked = payload.map((byte, i) => byte ^ (mask[i % 4] as number));
  return Buffer.concat([Buffer.from([0x81]), length, mask, masked]);
}

/**
 * A graphql-ws client on a bare TCP socket that subscribes to notify and then stops reading
 * for good (a ws client resumes its socket by itself, so it cannot stall).
 */
async function stalledSubscriber(server: TestServer, token: string): Promise<Socket> {
  const { hostname, port } = new URL(server.url);
  const socket = connect(Number(port), hostname);
  await once(socket, 'connect');
  let received = '';
  const seen = (needle: string) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${needle}: ${received}`)), WAIT_MS);
      const check = () => {
        if (!received.includes(needle)) return;
        clearTimeout(timer);
        socket.off('data', onData);
        resolve();
      };
      const onData = (chunk: Buffer) => {
        received += chunk.toString('latin1');
        check();
      };
      socket.on('data', onData);
      check();
    });
  socket.write(
    'GET /graphql HTTP/1.1\r\n' +
      `Host: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
      'Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n',
  );
  socket.write(clientFrame(JSON.stringify({ type: 'connection_init', payload: { token } })));
  await seen('"connection_ack"');
  socket.write(
    clientFrame(
      JSON.stringify({
        id: '1',
        type: 'subscribe',
        payload: { query: 'subscription { notify { ... on NotifyMessage { message } } }' },
      }),
    ),
  );
  await seen('"next"');
  socket.pause();
  return socket;
}

type NotifyQueue = ResultQueue<ExecutionResult<NotifySubscription>>;

async function channelOf(queue: NotifyQueue): Promise<string> {
  const first = await queue.next();
  const event = first.data?.notify;
  if (event?.__typename !== 'NotifyChannel') throw new Error(JSON.stringify(first));
  return event.channelId;
}

describe('metrics at /metrics', () => {
  const { a, b, ws, sse } = useInstances({
    // A stalled reader is found after a few big messages.
    WS_MAX_BUFFERED_BYTES: '65536',
    MESSAGE_MAX_BYTES: '1000000',
  });

  it('serves every metric docs/operations.md documents, and only those', async () => {
    const metrics = await scrape(a);
    const own = metrics.names.filter(
      (n) => !n.startsWith('switchboard_process_') && !n.startsWith('switchboard_nodejs_'),
    );
    const readme = readFileSync(new URL('../docs/operations.md', import.meta.url), 'utf8');
    const section = /\n## Metrics\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? '';
    const documented = [...section.matchAll(/^\| `(switchboard_\w+)`/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(own.sort());
    // The default process metrics are there too, under the same prefix.
    expect(metrics.names).toContain('switchboard_process_cpu_user_seconds_total');
    expect(metrics.value('switchboard_dependency_up', { dependency: 'postgres' })).toBe(1);
    expect(metrics.value('switchboard_dependency_up', { dependency: 'redis' })).toBe(1);
  });

  it('serves every metric the Grafana dashboard (deploy/grafana-dashboard.json) queries', async () => {
    interface Panel {
      title: string;
      datasource?: { uid?: string };
      targets?: { expr: string }[];
    }
    const dashboard = JSON.parse(
      readFileSync(new URL('../deploy/grafana-dashboard.json', import.meta.url), 'utf8'),
    ) as { panels: Panel[] };
    const exprs = dashboard.panels.flatMap((panel) => {
      // Every panel reads the dashboard's data source variable, so import works anywhere.
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax.
      expect([panel.title, panel.datasource?.uid]).toEqual([panel.title, '${datasource}']);
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      return (panel.targets ?? []).map((target) => target.expr);
    });
    const queried = new Set(exprs.flatMap((expr) => expr.match(/\bswitchboard_\w+/g) ?? []));

    const metrics = await scrape(a);
    // Served names: every family (HELP), every sample name (histogram _bucket/_sum/_count).
    const served = new Set([
      ...metrics.names,
      ...[...metrics.text.matchAll(/^(switchboard_\w+)[{ ]/gm)].map((m) => m[1] as string),
    ]);
    expect([...queried].filter((name) => !served.has(name))).toEqual([]);
    // What the dashboard is for: each of these is on it.
    for (const name of [
      'switchboard_connections',
      'switchboard_subscriptions',
      'switchboard_deliveries_total',
      'switchboard_delivery_latency_seconds_bucket',
      'switchboard_slow_consumers_total',
      'switchboard_rate_limited_total',
      'switchboard_limit_rejections_total',
      'switchboard_dependency_up',
    ]) {
      expect(queried).toContain(name);
    }
  });

  it('counts connections, subscriptions, events, deliveries and latency on both instances', async () => {
    const t1 = await a.token('metrics-1');
    const t2 = await a.token('metrics-2');
    const onA = ws(a, t1).subscribe(NotifyDocument, {});
    const onB = sse(b, t2).subscribe(NotifyDocument, {});
    const channelId = await channelOf(onA);
    await channelOf(onB);

    const [beforeA, beforeB] = await Promise.all([scrape(a), scrape(b)]);
    expect(beforeA.value('switchboard_connections', { transport: 'graphql-ws' })).toBeGreaterThan(
      0,
    );
    expect(beforeB.value('switchboard_connections', { transport: 'sse' })).toBeGreaterThan(0);
    expect(beforeA.value('switchboard_subscriptions', { field: 'notify' })).toBeGreaterThan(0);
    expect(beforeB.value('switchboard_subscriptions', { field: 'notify' })).toBeGreaterThan(0);

    const published = await gql(
      a.url,
      PublishDocument,
      { input: { channelId, name: 'm', toUsers: ['metrics-1', 'metrics-2'] } },
      t1,
    );
    expect(published.body.errors).toBeUndefined();
    expect((await onA.next()).data?.notify).toMatchObject({ name: 'm' });
    expect((await onB.next()).data?.notify).toMatchObject({ name: 'm' });

    const [afterA, afterB] = await Promise.all([scrape(a), scrape(b)]);
    const delta = (after: typeof afterA, before: typeof beforeA, name: string, labels = {}) =>
      after.value(name, labels) - before.value(name, labels);
    expect(delta(afterA, beforeA, 'switchboard_events_published_total', { event: 'notify' })).toBe(
      1,
    );
    expect(delta(afterB, beforeB, 'switchboard_events_published_total', { event: 'notify' })).toBe(
      0,
    );
    // Each instance wrote the message to its subscriber and timed it from the publish on A.
    for (const [after, before] of [
      [afterA, beforeA],
      [afterB, beforeB],
    ] as const) {
      expect(delta(after, before, 'switchboard_deliveries_total')).toBe(1);
      expect(delta(after, before, 'switchboard_executions_total')).toBe(1);
      expect(delta(after, before, 'switchboard_delivery_latency_seconds_count')).toBe(1);
      expect(
        delta(after, before, 'switchboard_delivery_latency_seconds_sum'),
      ).toBeGreaterThanOrEqual(0);
    }

    // Ending the subscription takes it out of the gauge.
    const notifyOnA = afterA.value('switchboard_subscriptions', { field: 'notify' });
    onA.close();
    await eventually(a, (m) =>
      expect(m.value('switchboard_subscriptions', { field: 'notify' })).toBe(notifyOnA - 1),
    );
  });

  it('counts a connection closed as a slow consumer (4499) by transport', async () => {
    const slowToken = await a.token('metrics-slow');
    const senderToken = await a.token('metrics-sender');
    const before = await scrape(a);
    const socket = await stalledSubscriber(a, slowToken);
    const closed = once(socket, 'close');

    const sender = ws(a, senderToken).subscribe(NotifyDocument, {});
    const channelId = await channelOf(sender);
    // Random, so WebSocket compression cannot shrink it.
    const big = randomBytes(600_000).toString('base64');
    const [slow] = a.app.connections.forUser('metrics-slow');
    expect(slow).toBeDefined();
    for (let sent = 0; !slow?.closed; sent++) {
      if (sent >= 200) throw new Error('the stalled reader was never closed');
      await gql(
        a.url,
        PublishDocument,
        { input: { channelId, name: 'load', toUsers: ['metrics-slow'], message: big } },
        senderToken,
      );
    }
    socket.destroy();
    await closed;
    const after = await scrape(a);
    const slowOf = (m: typeof after) =>
      m.value('switchboard_slow_consumers_total', { transport: 'graphql-ws' });
    expect(slowOf(after) - slowOf(before)).toBe(1);
    expect((await scrape(b)).value('switchboard_slow_consumers_total')).toBe(0);
  });
});
