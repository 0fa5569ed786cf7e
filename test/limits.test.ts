import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { CloseCode } from '../src/close-codes.ts';
import { gql, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { openAcked, openRaw, type RawSocket } from './support/raw-ws.ts';

const unique = (name: string) => `${name}-${randomBytes(4).toString('hex')}`;

/** A metric's value from /metrics (0 when absent). */
async function metric(url: string, name: string, label: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(label));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** A POST with a chunked body (no content-length). */
function postChunked(url: string, chunks: string[], headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      timeout: WAIT_MS,
    });
    req.once('response', (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}

/** Opens an SSE event stream; resolves with its status (the stream is aborted afterwards). */
async function sseStatus(url: string, token: string): Promise<number> {
  const controller = new AbortController();
  const query = encodeURIComponent('subscription { presence(userId: "x") { userId } }');
  const response = await fetch(`${url}/graphql?query=${query}`, {
    headers: { accept: 'text/event-stream', authorization: `Bearer ${token}` },
    signal: controller.signal,
  });
  controller.abort();
  return response.status;
}

const subscribe = (raw: RawSocket, id: string, query: string) =>
  raw.send({ id, type: 'subscribe', payload: { query } });

describe('limits', () => {
  const { a, b, onCleanup } = useInstances((index) => ({
    MAX_CONNECTIONS_PER_USER: '2',
    MAX_SUBSCRIPTIONS_PER_CONNECTION: '2',
    MAX_CONNECTIONS: index === 1 ? '3' : '1000',
    MAX_BODY_BYTES: '20000',
    MESSAGE_MAX_BYTES: '100',
    CHAT_MAX_LENGTH: '10',
    AUTOUPDATE_MAX_ITEM_BYTES: '100',
    GRAPHQL_MAX_DEPTH: '2',
    GRAPHQL_MAX_ALIASES: '2',
    GRAPHQL_MAX_TOKENS: '60',
    GRAPHQL_MAX_DIRECTIVES: '2',
    RATE_LIMIT_PUBLISH: '3/1m',
    RATE_LIMIT_APPLAUSE: '2/1m',
    RATE_LIMIT_PING: '2/1m',
    RATE_LIMIT_CHAT: '2/1m',
    RATE_LIMIT_WS_TOKEN: '2/1m',
    PING_MIN_INTERVAL_MS: '1',
  }));
  const track = (raw: RawSocket) => {
    onCleanup(() => raw.socket.terminate());
    return raw;
  };

  it('refuses a third connection of one user on graphql-ws (4029), SSE and legacy (429)', async () => {
    const user = unique('conn');
    const token = await a.token(user);
    const before = await metric(a.url, 'switchboard_limit_rejections_total', 'connectionsPerUser');
    track(await openAcked(a.wsUrl, token));
    track(await openAcked(a.wsUrl, token));
    const third = track(await openRaw(a.wsUrl));
    third.send({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } });
    expect((await third.closed()).code).toBe(CloseCode.TooManyConnections);
    expect(await sseStatus(a.url, token)).toBe(429);
    const heartbeat = await fetch(`${a.url}/heartbeat/subscribe/${user}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(heartbeat.status).toBe(429);
    const chatter = await openRaw(`${a.url.replace('http', 'ws')}/chatter/ws?token=${token}`, {
      protocol: null,
    }).catch((error: Error) => error.message);
    expect(chatter).toBe('upgrade refused: 429');
    // Another user, and the same user on the other instance, are not affected.
    track(await openAcked(a.wsUrl, await a.token(unique('other'))));
    track(await openAcked(b.wsUrl, token));
    const after = await metric(a.url, 'switchboard_limit_rejections_total', 'connectionsPerUser');
    expect(after - before).toBe(4);
  });

  it('refuses connections over MAX_CONNECTIONS of an instance (4029, SSE 503)', async () => {
    // Connect until the instance is full (earlier tests may hold places on B).
    const open = async () => {
      const raw = track(await openRaw(b.wsUrl));
      raw.send({ type: 'connection_init', payload: { token: await b.token(unique('full')) } });
      const first = await Promise.race([raw.messages.next(), raw.closed()]);
      return {
        raw,
        refused: 'code' in (first as object) ? (first as { code: number }).code : null,
      };
    };
    const accepted: RawSocket[] = [];
    let refused: number | null = null;
    for (let i = 0; i < 4 && refused === null; i++) {
      const result = await open();
      if (result.refused === null) accepted.push(result.raw);
      else refused = result.refused;
    }
    expect(refused).toBe(CloseCode.TooManyConnections);
    expect(accepted.length).toBeGreaterThan(0);
    expect(await sseStatus(b.url, await b.token(unique('full')))).toBe(503);
    // A freed place is taken again (the server sees the close a moment after the client).
    accepted[0]?.socket.close();
    await accepted[0]?.closed();
    let again = await open();
    for (let i = 0; i < 20 && again.refused !== null; i++) again = await open();
    expect(again.refused).toBeNull();
    for (const raw of [...accepted, again.raw]) raw.socket.close();
  });

  it('refuses operations over MAX_SUBSCRIPTIONS_PER_CONNECTION and admits again after one ends', async () => {
    const user = unique('subs');
    const raw = track(await openAcked(a.wsUrl, await a.token(user)));
    const query = `subscription { presence(userId: "${user}") { userId } }`;
    subscribe(raw, '1', query);
    subscribe(raw, '2', query);
    subscribe(raw, '3', query);
    const refused = (await raw.messages.next()) as { id: string; type: string; payload: unknown };
    expect(refused).toMatchObject({ id: '3', type: 'error' });
    expect(JSON.stringify(refused.payload)).toContain('RATE_LIMITED');
    raw.send({ id: '1', type: 'complete' });
    // Completing is processed in order: the next subscribe finds a free place.
    subscribe(raw, '4', query);
    raw.send({ id: '5', type: 'subscribe', payload: { query: '{ viewer { userId } }' } });
    const next = (await raw.messages.next()) as { id: string; type: string };
    expect(next).toMatchObject({ id: '5' });
    expect(next.type).toBe('error');
    raw.send({ id: '2', type: 'complete' });
    raw.send({ id: '6', type: 'subscribe', payload: { query: '{ viewer { userId } }' } });
    expect(await raw.messages.next()).toMatchObject({ id: '6', type: 'next' });
  });

  it('answers bodies over MAX_BODY_BYTES with 413, with or without content-length', async () => {
    const big = JSON.stringify({ query: `{ viewer { userId } } # ${'x'.repeat(25_000)}` });
    const plain = await fetch(`${a.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: big,
    });
    expect(plain.status).toBe(413);
    expect(
      (await postChunked(`${a.url}/graphql`, [big.slice(0, 15_000), big.slice(15_000)])).status,
    ).toBe(413);
    const small = await postChunked(`${a.url}/graphql`, ['{"query":', '"{ viewer { userId } }"}']);
    expect(small).toMatchObject({ status: 200 });
    expect(JSON.parse(small.body)).toEqual({ data: { viewer: null } });
    // The SSE and legacy handlers read bodies themselves, bounded the same way.
    const sse = await postChunked(`${a.url}/graphql`, [big], { accept: 'text/event-stream' });
    expect(sse.status).toBe(413);
    const icc = await postChunked(`${a.url}/system/icc/notify/publish`, [big], {
      authorization: `Bearer ${await a.token(unique('icc'))}`,
    });
    expect(icc.status).toBe(400);
  });

  it('refuses payloads over their limits with BAD_USER_INPUT and stores nothing', async () => {
    const user = unique('size');
    const token = await a.token(user, { group: 'g' });
    const service = await a.token('svc', { service: true });
    const chat = await gql(
      a.url,
      'mutation { sendChatMessage(to: "x", text: "01234567890") { id } }',
      undefined,
      token,
    );
    expect(chat.body.errors?.[0]?.message).toMatch(/limit is 10/);
    const write = await gql(
      a.url,
      'mutation($v: JSON) { writeData(changes: [{ key: "c/x:1", value: $v }]) }',
      { v: 'y'.repeat(200) },
      service,
    );
    expect(write.body.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' } });
    expect(write.body.errors?.[0]?.message).toMatch(/value is 202 bytes; the limit is 100/);
    const push = await gql(
      a.url,
      'mutation($p: JSON!) { pushEvents(events: [{ accessId: "1", payload: $p }]) { accepted } }',
      { p: { big: 'z'.repeat(200) } },
      service,
    );
    expect(push.body.errors?.[0]?.message).toMatch(/payload is \d+ bytes; the limit is 100/);
    const notifier = await fetch(`${a.url}/notifier/push_events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${service}` },
      body: JSON.stringify([{ accessid: '1', created_at: 1, payload: 'p'.repeat(200) }]),
    });
    expect(notifier.status).toBe(400);
  });

  it('applies depth, alias, token and directive limits on HTTP, graphql-ws and SSE', async () => {
    const token = await a.token(unique('armor'));
    const cases = {
      depth: 'subscription { autoupdate { events { changeId } } }',
      aliases: '{ a: viewer { userId } b: viewer { userId } c: viewer { userId } }',
      tokens: `{ viewer { ${'userId '.repeat(60)} } }`,
      directives:
        '{ viewer @include(if: true) { userId @skip(if: false) group @include(if: true) } }',
    };
    for (const [name, query] of Object.entries(cases)) {
      const overHttp = await gql(a.url, query, undefined, token);
      expect(overHttp.body.errors?.length, `${name} over HTTP`).toBeGreaterThan(0);
      expect(overHttp.body.data ?? null).toBeNull();
      const raw = track(await openAcked(a.wsUrl, token));
      subscribe(raw, name, query);
      expect(await raw.messages.next(), `${name} over graphql-ws`).toMatchObject({ type: 'error' });
      raw.socket.close();
      const response = await fetch(`${a.url}/graphql?query=${encodeURIComponent(query)}`, {
        headers: { accept: 'text/event-stream', authorization: `Bearer ${token}` },
      });
      const text = await response.text();
      expect(text, `${name} over SSE`).toMatch(/"errors"/);
      expect(text).not.toMatch(/"data":\{/);
    }
    // Within the limits the same shapes pass.
    const fine = await gql(
      a.url,
      '{ a: viewer { userId } b: viewer { userId } }',
      undefined,
      token,
    );
    expect(fine.body.errors).toBeUndefined();
  });

  it('checks an operation text again each time it was refused, and variables each time', async () => {
    const token = await a.token(unique('again'));
    const raw = track(await openAcked(a.wsUrl, token));
    const deep = 'subscription { autoupdate { events { changeId } } }';
    const before = await metric(a.url, 'switchboard_limit_rejections_total', 'graphqlDepth');
    for (const id of ['deep-1', 'deep-2']) {
      subscribe(raw, id, deep);
      expect(await raw.messages.next(), id).toMatchObject({ id, type: 'error' });
    }
    // Each refusal is reported, not only the first one.
    const after = await metric(a.url, 'switchboard_limit_rejections_total', 'graphqlDepth');
    expect(after - before).toBe(2);
    // A valid text, known from its first use, still has its variables checked every time.
    const lastSeen = 'query($u: ID!) { lastSeen(userId: $u) { userId } }';
    for (const [id, u] of [
      ['fine-1', 'someone'],
      ['nul', 'some\u0000one'],
      ['fine-2', 'someone'],
    ] as const) {
      raw.send({ id, type: 'subscribe', payload: { query: lastSeen, variables: { u } } });
      const first = await raw.messages.next();
      if (id === 'nul') {
        expect(first).toMatchObject({ id, type: 'error' });
        expect(JSON.stringify(first)).toContain('U+0000');
      } else {
        expect(first).toMatchObject({ id, type: 'next', payload: { data: { lastSeen: null } } });
        expect(await raw.messages.next()).toMatchObject({ id, type: 'complete' });
      }
    }
  });

  it('rate-limits publish across instances (RATE_LIMITED with retryAfterMs, ICC 429)', async () => {
    const token = await a.token(unique('rate'));
    const publish = (server: typeof a) =>
      gql(
        server.url,
        'mutation { publish(input: { channelId: "bad", name: "n", toAll: true }) }',
        undefined,
        token,
      );
    for (const server of [a, b, a]) {
      expect((await publish(server)).body.errors?.[0]?.extensions?.['code']).toBe('BAD_USER_INPUT');
    }
    const limited = (await publish(b)).body.errors?.[0];
    expect(limited?.extensions?.['code']).toBe('RATE_LIMITED');
    expect(limited?.extensions?.['retryAfterMs']).toBeGreaterThan(0);
    const icc = await fetch(`${a.url}/system/icc/notify/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      body: '{"channel_id":"x","name":"n","to_all":true}',
    });
    expect(icc.status).toBe(429);
    expect(await metric(b.url, 'switchboard_rate_limited_total', 'publish')).toBeGreaterThan(0);
  });

  it('rate-limits sendApplause, ping, sendChatMessage and createWsToken (legacy 429)', async () => {
    const user = unique('rates');
    const token = await a.token(user, { group: 'g' });
    const code = async (query: string, server = a) =>
      (await gql(server.url, query, undefined, token)).body.errors?.[0]?.extensions?.['code'] ??
      'OK';
    const calls = {
      applause: 'mutation { sendApplause(meetingId: "1") }',
      ping: 'mutation { ping { userId } }',
      chat: 'mutation { sendChatMessage(to: "nobody", text: "hi") { id } }',
      wsToken: 'mutation { createWsToken { token } }',
    };
    for (const [name, query] of Object.entries(calls)) {
      const first = [await code(query), await code(query, b)];
      expect(first, name).not.toContain('RATE_LIMITED');
      expect(await code(query, b), name).toBe('RATE_LIMITED');
    }
    const legacy = [
      fetch(`${a.url}/heartbeat/ping`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        body: '{"status":"1"}',
      }),
      fetch(`${a.url}/chatter/ws_token`, { headers: { authorization: `Bearer ${token}` } }),
      fetch(`${a.url}/system/icc/applause/send?meeting_id=1`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
      }),
      fetch(`${a.url}/system/applause`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
      }),
    ];
    expect((await Promise.all(legacy)).map((r) => r.status)).toEqual([429, 429, 429, 429]);
  });
});
