import { EventSource } from 'eventsource';
import { describe, expect, it } from 'vitest';
import { LastSeenDocument, PingDocument, PresenceDocument } from './generated/graphql.ts';
import { expiredToken, type TestServer } from './support/app.ts';
import { gql, ResultQueue, WAIT_MS, warmUp } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

interface Frame {
  time: number;
  status: string;
}

let userCounter = 0;
const uniqueUser = (label: string) => `${label}-${process.pid}-${Date.now()}-${++userCounter}`;

function postPing(
  server: TestServer,
  body: string,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(`${server.url}/heartbeat/ping`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body,
    signal: AbortSignal.timeout(WAIT_MS),
  });
}

/** Pings made until one shows on a stream (a ping within the minimum interval is ignored). */
const WARM_UP_ATTEMPTS = 20;

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const claim = (userid: unknown) => ({ 'x-user-claim': JSON.stringify({ userid }) });

/** Pings (legacy) until `frames` shows the status: a ping within the minimum interval is ignored. */
async function pingUntilSeen(
  server: TestServer,
  token: string,
  status: string,
  frames: ResultQueue<Frame>,
): Promise<Frame> {
  const frame = await warmUp(
    async () => {
      const response = await postPing(server, JSON.stringify({ status }), bearer(token));
      expect(response.status).toBe(200);
    },
    (timeoutMs) => frames.next(timeoutMs),
    { attempts: WARM_UP_ATTEMPTS },
  );
  if (!frame) throw new Error(`ping ${status} not seen after ${WARM_UP_ATTEMPTS} pings`);
  expect(frame.status).toBe(status);
  return frame;
}

describe('heartbeat endpoints across two instances on one Redis', () => {
  // A trusts X-User-Claim, B does not.
  const { a, b, ws, onCleanup } = useInstances((index) => ({
    PING_MIN_INTERVAL_MS: '50',
    HEARTBEAT_KEEPALIVE_S: '0.2',
    // Anyone may follow a user's pings, as in the original.
    ANONYMOUS_CONNECTIONS: '20',
    ...(index === 0 ? { TRUST_USER_CLAIM_HEADER: 'true' } : {}),
  }));

  /** An EventSource on a heartbeat stream; resolves once the response headers arrived. */
  async function subscribe(server: TestServer, path: string, token?: string) {
    const url = new URL(`${server.url}/heartbeat/subscribe/${path}`);
    if (token) url.searchParams.set('token', token);
    const frames = new ResultQueue<Frame>();
    const source = new EventSource(url);
    onCleanup(() => source.close());
    source.addEventListener('message', (event) => frames.push(JSON.parse(event.data) as Frame));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('stream did not open')), WAIT_MS);
      source.addEventListener('open', () => {
        clearTimeout(timer);
        resolve();
      });
      source.addEventListener('error', (event) => {
        clearTimeout(timer);
        reject(new Error(`stream failed: ${event.code ?? ''} ${event.message ?? ''}`));
      });
    });
    return { frames, close: () => source.close() };
  }

  it('answers 400 Bad Request without identity, with a bad claim or a bad body, and changes nothing', async () => {
    const user = uniqueUser('bad');
    const token = await a.token(user);
    const expectBadRequest = async (response: Promise<Response>) => {
      const r = await response;
      expect(r.status).toBe(400);
      expect(await r.text()).toBe('Bad Request');
    };
    const ok = JSON.stringify({ status: '0' });
    await expectBadRequest(postPing(a, ok));
    await expectBadRequest(postPing(b, ok));
    for (const header of ['not json', '{"userid":{}}', '{"user":"1"}', '{"userid":""}', '[]']) {
      await expectBadRequest(postPing(a, ok, { 'x-user-claim': header }));
    }
    // B does not trust the claim: it is ignored, so there is no identity.
    await expectBadRequest(postPing(b, ok, claim(user)));
    await expectBadRequest(postPing(a, ok, bearer(await expiredToken(user))));
    for (const body of ['{"status":0}', 'not json', '[]', '{}', 'null', '{"status":null}']) {
      await expectBadRequest(postPing(a, body, bearer(token)));
      await expectBadRequest(postPing(a, body, claim(user)));
    }
    await expectBadRequest(postPing(b, JSON.stringify({ status: 'x'.repeat(100) }), bearer(token)));

    const seen = await gql(a.url, LastSeenDocument, { userId: user }, token);
    expect(seen.body).toEqual({ data: { lastSeen: null } });

    expect((await fetch(`${a.url}/heartbeat/ping`)).status).toBe(405);
    expect((await fetch(`${a.url}/heartbeat/nope`)).status).toBe(404);
    expect((await fetch(`${a.url}/heartbeat/subscribe/u/other/c`)).status).toBe(404);
    expect((await fetch(`${a.url}/heartbeat/subscribe/x?token=forged`)).status).toBe(401);
  });

  it('answers 400 Bad Request to a subscribe for an invalid user id', async () => {
    const response = await fetch(`${a.url}/heartbeat/subscribe/${'x'.repeat(300)}`);
    expect(response.status).toBe(400);
    expect(await response.text()).toBe('Bad Request');
  });

  it('delivers a ping of u1 to both its SSE subscribers and not to a subscriber of u2', async () => {
    const u1 = uniqueUser('u1');
    const u2 = uniqueUser('u2');
    const first = await subscribe(a, encodeURIComponent(u1));
    const second = await subscribe(b, `${encodeURIComponent(u1)}/client/c-1`);
    const other = await subscribe(b, encodeURIComponent(u2));

    const before = Math.floor(Date.now() / 1000);
    const response = await postPing(a, JSON.stringify({ status: '1' }), claim(u1));
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('');
    const after = Math.ceil(Date.now() / 1000);
    for (const s of [first, second]) {
      const frame = await s.frames.next();
      expect(frame.status).toBe('1');
      expect(Number.isInteger(frame.time)).toBe(true);
      expect(frame.time).toBeGreaterThanOrEqual(before);
      expect(frame.time).toBeLessThanOrEqual(after);
    }

    // A ping of u2 after the one of u1: the u2 stream's first frame is it, not u1's.
    const marker = await postPing(b, JSON.stringify({ status: '2' }), bearer(await b.token(u2)));
    expect(marker.status).toBe(200);
    expect((await other.frames.next()).status).toBe('2');
    expect(other.frames.pending).toHaveLength(0);
  });

  it('sends the cached ping first to a stream opened after the ping', async () => {
    const user = uniqueUser('late');
    const token = await b.token(user);
    expect((await postPing(b, JSON.stringify({ status: '2' }), bearer(token))).status).toBe(200);
    const late = await subscribe(a, `${encodeURIComponent(user)}/client/abc`);
    const frame = await late.frames.next();
    expect(frame.status).toBe('2');

    const seen = await gql(a.url, LastSeenDocument, { userId: user }, token);
    expect(seen.body.data?.lastSeen).toMatchObject({
      userId: user,
      status: 'DO_NOT_DISTURB',
      statusCode: '2',
      online: true,
    });
    const time = seen.body.data?.lastSeen?.time ?? '';
    expect(frame.time).toBe(Math.floor(new Date(time).getTime() / 1000));
  });

  it('keeps unknown codes as statusCode with status ACTIVE, and mixes with GraphQL pings', async () => {
    const user = uniqueUser('code');
    const token = await a.token(user);
    const watcher = ws(b, await b.token(uniqueUser('w')));
    const stream = await subscribe(a, encodeURIComponent(user));

    expect((await postPing(a, JSON.stringify({ status: 'lunch' }), bearer(token))).status).toBe(
      200,
    );
    expect((await stream.frames.next()).status).toBe('lunch');
    const presence = watcher.subscribe(PresenceDocument, { userId: user });
    const first = await presence.next();
    expect(first.data?.presence).toMatchObject({ status: 'ACTIVE', statusCode: 'lunch' });

    // A GraphQL ping shows on the legacy stream with its code.
    const frame = await warmUp(
      async () => {
        const result = await gql(a.url, PingDocument, { status: 'AWAY' }, token);
        expect(result.body.errors).toBeUndefined();
      },
      (timeoutMs) => stream.frames.next(timeoutMs),
      { attempts: WARM_UP_ATTEMPTS },
    );
    expect(frame?.status).toBe('1');
  });

  it('shows INVISIBLE only on the user own stream', async () => {
    const user = uniqueUser('inv');
    const token = await a.token(user);
    expect((await postPing(a, JSON.stringify({ status: '0' }), bearer(token))).status).toBe(200);
    const own = await subscribe(b, encodeURIComponent(user), await b.token(user));
    const anonymous = await subscribe(a, encodeURIComponent(user));
    for (const s of [own, anonymous]) expect((await s.frames.next()).status).toBe('0');

    await pingUntilSeen(a, token, '3', own.frames);
    await pingUntilSeen(b, token, '1', own.frames);
    // The anonymous stream's next frame is the visible ping: it never saw "3".
    expect((await anonymous.frames.next()).status).toBe('1');
    expect(anonymous.frames.pending).toHaveLength(0);
  });

  it('sends headers at once and flushed keep-alive comments', async () => {
    const controller = new AbortController();
    onCleanup(() => controller.abort());
    const response = await fetch(`${b.url}/heartbeat/subscribe/${uniqueUser('ka')}`, {
      signal: controller.signal,
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    const reader = response.body?.getReader();
    if (!reader) throw new Error('no body');
    const decoder = new TextDecoder();
    let text = '';
    const read = async () => {
      while (!text.includes(':\n\n')) {
        const { value, done } = await reader.read();
        if (done) throw new Error('stream ended');
        text += decoder.decode(value, { stream: true });
      }
    };
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      read(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('no keep-alive comment')), WAIT_MS);
      }),
    ]).finally(() => clearTimeout(timer));
    expect(text.startsWith(':\n\n')).toBe(true);
    controller.abort();
  });

  it('releases the connection when a stream closes', async () => {
    const user = uniqueUser('rel');
    const token = await a.token(user);
    const stream = await subscribe(a, encodeURIComponent(user), token);
    expect(a.app.connections.forUser(user)).toHaveLength(1);
    stream.close();
    // No event tells the test that the server saw the close: poll, bounded.
    const deadline = Date.now() + WAIT_MS;
    while (a.app.connections.forUser(user).length > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(a.app.connections.forUser(user)).toHaveLength(0);
  });
});
