import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { TestServer } from './support/app.ts';
import { ResultQueue, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

const SECRET = 'notifier-shared-secret-for-tests';
const unique = (name: string) => `${name}-${randomBytes(4).toString('hex')}`;

interface NotifierSocket {
  socket: WebSocket;
  /** Text frames, in order. */
  frames: ResultQueue<string>;
  /** Resolves with the close code and reason (bounded). */
  closed(): Promise<{ code: number; reason: string }>;
  /** The next frame parsed as a JSON array of events. */
  nextEvents(): Promise<{ accessid: string; created_at: number; payload: unknown }[]>;
  announce(body: unknown): void;
}

/** Opens `subscribe_to_events`; rejects when the upgrade is refused (with the status). */
function openSocket(server: TestServer, token?: string): Promise<NotifierSocket> {
  const url = `${server.url.replace(/^http/, 'ws')}/notifier/subscribe_to_events`;
  const socket = new WebSocket(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const frames = new ResultQueue<string>();
  let close: { code: number; reason: string } | null = null;
  socket.on('message', (data) => frames.push(String(data)));
  socket.on('close', (code, reason) => {
    close = { code, reason: String(reason) };
    frames.end();
  });
  const handle: NotifierSocket = {
    socket,
    frames,
    async closed() {
      await frames.waitForEnd();
      return close as unknown as { code: number; reason: string };
    },
    async nextEvents() {
      return JSON.parse(await frames.next());
    },
    announce: (body) => socket.send(JSON.stringify(body)),
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no open within bound')), WAIT_MS);
    socket.once('open', () => {
      clearTimeout(timer);
      resolve(handle);
    });
    socket.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      reject(new Error(`refused: ${res.statusCode}`));
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

describe('notifier endpoints across two instances on one Redis', () => {
  const { a, b, onCleanup } = useInstances({
    NOTIFIER_SECRET: SECRET,
    NOTIFIER_ANNOUNCE_TIMEOUT_MS: '1000',
  });
  let service: string;
  const terminated = (s: NotifierSocket) => onCleanup(() => s.socket.terminate());

  beforeAll(async () => {
    service = await a.token('connector', { service: true });
  });

  const subscriber = async (server: TestServer, accessId: string, timestamp: number) => {
    const s = await openSocket(server, await server.token(accessId));
    terminated(s);
    s.announce({ access_id: accessId, timestamp });
    return s;
  };

  const post = (
    server: TestServer,
    path: string,
    body: string,
    headers: Record<string, string> = {},
  ) =>
    fetch(`${server.url}/notifier/${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${service}`,
        ...headers,
      },
      body,
      signal: AbortSignal.timeout(WAIT_MS),
    });

  const push = async (server: TestServer, events: unknown[]) => {
    const response = await post(server, 'push_events', JSON.stringify(events));
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('true');
  };

  it('delivers each access id its events with created_at >= timestamp, live and replayed', async () => {
    const [c1, c2, c3] = [unique('client1'), unique('client2'), unique('client3')];
    const s1 = await subscriber(a, c1, 1000);
    const s2 = await subscriber(b, c2, 1000);
    await push(b, [
      { accessid: c1, created_at: 1000, payload: 'c1 at 1000' },
      { accessid: c2, created_at: 3000, payload: 'c2 at 3000' },
      { accessid: c3, created_at: 4000, payload: 'c3 at 4000' },
      { accessid: c1, created_at: 500, payload: 'c1 at 500' },
      { accessid: c1, created_at: 999, payload: 'c1 at 999' },
    ]);
    expect(await s1.nextEvents()).toEqual([
      { accessid: c1, created_at: 1000, payload: 'c1 at 1000' },
    ]);
    expect(await s2.nextEvents()).toEqual([
      { accessid: c2, created_at: 3000, payload: 'c2 at 3000' },
    ]);

    // Markers: nothing else reached either socket before them.
    await push(a, [
      { accessid: c1, created_at: 2000, payload: { marker: 1 } },
      { accessid: c2, created_at: 2000, payload: { marker: 2 } },
    ]);
    expect(await s1.nextEvents()).toEqual([
      { accessid: c1, created_at: 2000, payload: { marker: 1 } },
    ]);
    expect(await s2.nextEvents()).toEqual([
      { accessid: c2, created_at: 2000, payload: { marker: 2 } },
    ]);

    // A later subscriber with an old timestamp gets the stored events replayed, in order; a
    // second socket of the same access id receives live events as well.
    const late = await subscriber(b, c1, 0);
    expect((await late.nextEvents()).map((e) => e.payload)).toEqual([
      'c1 at 1000',
      'c1 at 500',
      'c1 at 999',
      { marker: 1 },
    ]);
    await push(a, [{ accessid: c1, created_at: 5000, payload: 'both' }]);
    for (const s of [s1, late]) {
      expect(await s.nextEvents()).toEqual([{ accessid: c1, created_at: 5000, payload: 'both' }]);
    }

    const clients = await fetch(`${a.url}/notifier/clients`, {
      headers: { authorization: SECRET },
    });
    const text = await clients.text();
    expect(text.startsWith('Connected clients:')).toBe(true);
    expect(text).toContain(`${c1} `);
    expect(text).toContain(`${c2} `);
  });

  it('drops every socket of an access id on both instances with 1000 "close"', async () => {
    const [victim, bystander] = [unique('victim'), unique('bystander')];
    const onA = await subscriber(a, victim, 0);
    const onB = await subscriber(b, victim, 0);
    const other = await subscriber(a, bystander, 0);
    // Subscribed for sure once a live event arrived.
    await push(a, [
      { accessid: victim, created_at: 1, payload: 'hello' },
      { accessid: bystander, created_at: 1, payload: 'hello' },
    ]);
    for (const s of [onA, onB, other]) await s.nextEvents();

    const response = await post(b, 'drop_user', JSON.stringify({ drop_access_id: victim }), {
      authorization: `Bearer ${SECRET}`,
    });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('true');
    expect(await onA.closed()).toEqual({ code: 1000, reason: 'close' });
    expect(await onB.closed()).toEqual({ code: 1000, reason: 'close' });

    await push(b, [{ accessid: bystander, created_at: 2, payload: 'still here' }]);
    expect((await other.nextEvents())[0]?.payload).toBe('still here');
  });

  it('answers a bad first frame with "Wrong JSON announcement" and closes', async () => {
    const accessId = unique('bad');
    for (const frame of ['{not json', '{"access_id": 5, "timestamp": 1}', '{"access_id": "x"}']) {
      const s = await openSocket(a, await a.token(accessId));
      terminated(s);
      s.socket.send(frame);
      expect(await s.frames.next()).toBe('Wrong JSON announcement');
      expect((await s.closed()).code).toBe(1000);
    }
  });

  it('closes a socket that never announces itself', async () => {
    const s = await openSocket(b, await b.token(unique('silent')));
    terminated(s);
    expect((await s.closed()).code).toBe(1000);
  });

  it('refuses subscribers without a token for the access id', async () => {
    await expect(openSocket(a)).rejects.toThrow('refused: 401');
    const s = await openSocket(a, await a.token(unique('someone')));
    terminated(s);
    s.announce({ access_id: unique('someone-else'), timestamp: 0 });
    expect((await s.closed()).code).toBe(4403);
  });

  it('checks content type, body and caller of push_events and drop_user', async () => {
    const events = JSON.stringify([{ accessid: 'x', created_at: 1, payload: 'p' }]);
    expect((await post(a, 'push_events', events, { 'content-type': 'text/plain' })).status).toBe(
      415,
    );
    for (const bad of [
      '{',
      '{"accessid": "x"}',
      '[{"created_at": 1}]',
      '[{"accessid": "x", "created_at": "soon"}]',
    ]) {
      const response = await post(a, 'push_events', bad);
      expect(response.status).toBe(400);
    }
    expect((await post(a, 'drop_user', '{"user": 1}')).status).toBe(400);
    expect((await post(a, 'push_events', events, { authorization: '' })).status).toBe(401);
    expect(
      (await post(a, 'push_events', events, { authorization: 'Bearer wrong-secret' })).status,
    ).toBe(401);
    const user = await a.token(unique('user'));
    expect((await post(a, 'push_events', events, { authorization: `Bearer ${user}` })).status).toBe(
      403,
    );
    expect((await post(a, 'push_events', events, { authorization: SECRET })).status).toBe(200);
    expect((await fetch(`${a.url}/notifier/clients`)).status).toBe(401);
    expect((await fetch(`${a.url}/notifier/nope`)).status).toBe(404);
  });
});

describe('notifier open mode', () => {
  const { a: server } = useInstances({ NOTIFIER_OPEN: 'true', ANONYMOUS_CONNECTIONS: '20' }, 1, {
    redis: false,
  });

  it('lets anyone subscribe to any access id when NOTIFIER_OPEN=true', async () => {
    const s = await openSocket(server);
    s.announce({ access_id: 'anyone', timestamp: 0 });
    const service = await server.token('connector', { service: true });
    const response = await fetch(`${server.url}/notifier/push_events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${service}` },
      body: JSON.stringify([{ accessid: 'anyone', created_at: 1, payload: 'open' }]),
    });
    expect(response.status).toBe(200);
    expect(await s.nextEvents()).toEqual([{ accessid: 'anyone', created_at: 1, payload: 'open' }]);
    s.socket.terminate();
  });
});
