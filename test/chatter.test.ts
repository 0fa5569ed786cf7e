import { randomBytes } from 'node:crypto';
import type { ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  ChatDocument,
  type ChatSubscription,
  MessagesDocument,
  SendChatMessageDocument,
} from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { gql, nextMatching, ResultQueue, WAIT_MS, warmUp } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

const unique = (name: string) => `${name}-${randomBytes(4).toString('hex')}`;
const SECRET = 'chatter-test-secret';

type Frame = Record<string, unknown>;

/** A legacy chatter socket: its frames in a bounded queue, its close code once closed. */
interface ChatterSocket {
  socket: WebSocket;
  frames: ResultQueue<Frame>;
  closed: Promise<{ code: number; reason: string }>;
  send(frame: unknown): void;
  /** The next chat frame (with an id), skipping presence frames. */
  nextChat(timeoutMs?: number): Promise<Frame>;
}

function openSocket(url: string): Promise<ChatterSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    const frames = new ResultQueue<Frame>();
    const closed = new Promise<{ code: number; reason: string }>((done) => {
      socket.once('close', (code, reason) => {
        frames.end();
        done({ code, reason: String(reason) });
      });
    });
    socket.on('message', (data) => frames.push(JSON.parse(String(data)) as Frame));
    const timer = setTimeout(() => reject(new Error('no answer to the upgrade')), WAIT_MS);
    socket.once('open', () => {
      clearTimeout(timer);
      resolve({
        socket,
        frames,
        closed,
        send: (frame) => socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame)),
        nextChat: (timeoutMs = WAIT_MS) => nextMatching(frames, (f) => 'id' in f, { timeoutMs }),
      });
    });
    socket.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      res.resume();
      reject(new Error(`upgrade refused with ${res.statusCode}`));
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

describe('chatter shim across two instances', () => {
  const { a, b, ws, onCleanup } = useInstances({ CHATTER_SERVICE_SECRET: SECRET });

  const call = async (
    server: TestServer,
    path: string,
    init: { method?: string; auth?: string; body?: string } = {},
  ) => {
    const response = await fetch(`${server.url}/chatter${path}`, {
      method: init.method ?? 'GET',
      headers: {
        ...(init.auth === undefined ? {} : { authorization: init.auth }),
        ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(init.body === undefined ? {} : { body: init.body }),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    return { status: response.status, body: (await response.json()) as Frame };
  };
  const said = (message: string) => ({ result: null, message: [{ message }] });
  const createUser = (username: string, group: string, auth = SECRET) =>
    call(a, '/user', {
      method: 'POST',
      auth,
      body: JSON.stringify({ username, user_group: group, ignored: true }),
    });
  const wsToken = async (server: TestServer, jwt: string) => {
    const r = await call(server, '/ws_token', { auth: `Bearer ${jwt}` });
    expect(r.status).toBe(201);
    return (r.body['result'] as { token: string }).token;
  };
  const chatter = async (server: TestServer, jwt: string) => {
    const token = await wsToken(server === a ? b : a, jwt);
    const s = await openSocket(`${server.url.replace(/^http/, 'ws')}/chatter/ws?token=${token}`);
    onCleanup(() => s.socket.terminate());
    return s;
  };

  it('answers healthz', async () => {
    expect(await call(a, '/healthz')).toEqual({ status: 200, body: said('Health OK') });
  });

  it('creates users only for the secret or a service token, once, from a good body', async () => {
    const [u1, u2, u3] = [unique('u'), unique('u'), unique('u')];
    expect(await createUser(u1, 'g', '')).toEqual({ status: 400, body: said('Not authorised') });
    expect(await createUser(u1, 'g', 'wrong')).toEqual({
      status: 400,
      body: said('Not authorised'),
    });
    const user = await a.token(unique('user'));
    expect(await createUser(u1, 'g', `Bearer ${user}`)).toEqual({
      status: 400,
      body: said('Not authorised'),
    });
    expect(await createUser(u1, 'g')).toEqual({ status: 201, body: said('Created user') });
    expect((await createUser(u1, 'g')).status).toBe(400);
    const service = await b.token(unique('svc'), { service: true });
    expect(await createUser(u2, 'g', `Bearer ${service}`)).toEqual({
      status: 201,
      body: said('Created user'),
    });
    for (const body of [
      'not json',
      '[]',
      '{"user_group":"g"}',
      `{"username":"${u3}","user_group":5}`,
    ]) {
      const r = await call(b, '/user', { method: 'POST', auth: SECRET, body });
      expect(r.status).toBe(400);
    }
    expect(await a.app.db.prisma.user.count({ where: { id: { in: [u1, u2, u3] } } })).toBe(2);
    expect((await call(a, '/user')).status).toBe(405);
    expect((await call(a, '/nowhere')).status).toBe(404);
  });

  it('hands out ws tokens to callers with a token; expires is a date-time string (model/token.go: `Expiration time.Time`)', async () => {
    const user = unique('u');
    const before = Date.now();
    const r = await call(b, '/ws_token', { auth: `Bearer ${await b.token(user)}` });
    expect(r.status).toBe(201);
    expect(r.body['message']).toBeNull();
    const result = r.body['result'] as { token: string; username: string; expires: unknown };
    expect(result.token).toMatch(/^[A-Za-z0-9_-]{28,}$/);
    expect(result.username).toBe(user);
    // Go writes a time.Time as RFC 3339; a typed client parses it as a date, never a number.
    expect(result.expires).toEqual(
      expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/),
    );
    expect(Date.parse(result.expires as string)).toBeGreaterThanOrEqual(before + 300_000);
    expect((await call(b, '/ws_token')).status).toBe(400);
    expect((await call(b, '/ws_token', { auth: 'Bearer nonsense' })).body).toEqual(
      said('Not authorised'),
    );
  });

  it('refuses bad ws tokens with 403', async () => {
    const base = `${a.url.replace(/^http/, 'ws')}/chatter/ws`;
    await expect(openSocket(`${base}?token=bogus`)).rejects.toThrow(/403/);
    await expect(openSocket(base)).rejects.toThrow(/403/);
    expect((await call(a, '/ws?token=bogus')).status).toBe(403);
  });

  it('serves history and connections with the old shapes; ids are numbers (model/chat_message.go: `ID int`)', async () => {
    const group = unique('g');
    const [u1, u2] = [unique('u'), unique('u')];
    await createUser(u1, group);
    await createUser(u2, group);
    const jwt = await a.token(u1, { group });
    const sent = [];
    for (const text of ['one', 'two', 'three']) {
      const r = await gql(b.url, SendChatMessageDocument, { to: u2, text }, jwt);
      sent.push(r.body.data?.sendChatMessage);
    }
    const auth = `Bearer ${jwt}`;
    const page = await call(a, `/messages?from=${u1}&to=${u2}`, { auth });
    expect(page.status).toBe(200);
    expect(page.body['result']).toEqual(
      sent.map((m) => ({
        id: Number(m?.id),
        username_from: u1,
        username_to: u2,
        message: m?.text,
        created: m?.createdAt,
      })),
    );
    const older = await call(a, `/messages?from=${u1}&to=${u2}&before=${sent[2]?.id}&limit=1`, {
      auth,
    });
    expect((older.body['result'] as Frame[]).map((m) => m['message'])).toEqual(['two']);
    expect(await call(a, `/messages?from=${u2}&to=${u1}`, { auth })).toEqual({
      status: 422,
      body: said('Wrong'),
    });
    expect((await call(a, `/messages?from=${u1}&to=${unique('nobody')}`, { auth })).status).toBe(
      422,
    );
    expect((await call(a, `/messages?from=${u1}&to=${u2}&limit=x`, { auth })).status).toBe(400);

    const connections = await call(b, '/connections', { auth });
    expect(connections).toEqual({
      status: 200,
      body: {
        result: [u1, u2].sort().map((username) => ({ username, active: false })),
        message: null,
      },
    });
  });

  it('lets a legacy WebSocket client and a GraphQL client chat both ways', async () => {
    const group = unique('g');
    const [legacy, modern] = [unique('legacy'), unique('modern')];
    await createUser(modern, group);
    const legacyJwt = await a.token(legacy, { group });
    const modernJwt = await b.token(modern, { group });

    // The legacy user, created from its token on first use; its stream is live once its own
    // message comes back to it (warm up until one does).
    const old = await chatter(a, legacyJwt);
    const echo = await warmUp(
      () => old.send({ username_to: legacy, message: 'me' }),
      (timeoutMs) => old.nextChat(timeoutMs),
    );
    expect(echo).toMatchObject({ username_from: legacy, username_to: legacy, message: 'me' });
    // Drain the other echoes: a marker ends them.
    old.send({ username_to: legacy, message: 'marker' });
    await nextMatching(old.frames, (f) => f['message'] === 'marker');

    // The GraphQL user connects on the other instance: the legacy socket sees it come online.
    const client = ws(b, modernJwt);
    const stream = client.subscribe(ChatDocument, {});
    const online = await nextMatching(old.frames, (f) => f['username'] === modern);
    expect(online).toEqual({ username: modern, active: true });
    const nextMessage = async (timeoutMs = WAIT_MS) => {
      for (;;) {
        const r: ExecutionResult<ChatSubscription> = await stream.next(timeoutMs);
        const event = r.data?.chat;
        if (event?.__typename === 'ChatMessage') return event;
      }
    };
    // Until the GraphQL stream is live, warm up: legacy -> modern, as often as needed.
    const first = await warmUp(
      () => old.send({ username_to: modern, message: 'warm-up', image_path: '/w.png' }),
      nextMessage,
    );
    expect(first).toMatchObject({ from: legacy, to: modern, text: 'warm-up', imagePath: '/w.png' });

    // legacy -> GraphQL: the same real id on both ends and in the history.
    old.send({ username_to: modern, message: 'hello modern', sender: 'ignored' });
    const own = await nextMatching(old.frames, (f) => f['message'] === 'hello modern');
    let received = await nextMessage();
    while (received.text !== 'hello modern') received = await nextMessage();
    // chatter frames carry the id as a JSON number (the original's `ID int`), GraphQL as an ID.
    expect(own['id']).toEqual(expect.any(Number));
    expect(received).toMatchObject({ id: String(own['id']), from: legacy, to: modern });
    expect(own).toEqual({
      id: Number(received.id),
      username_from: legacy,
      username_to: modern,
      message: 'hello modern',
      created: received.createdAt,
    });
    const history = await gql(a.url, MessagesDocument, { peerId: legacy, limit: 1 }, modernJwt);
    expect(history.body.data?.messages[0]?.id).toBe(received.id);

    // GraphQL -> legacy.
    const reply = await gql(
      a.url,
      SendChatMessageDocument,
      { to: legacy, text: 'hi old' },
      modernJwt,
    );
    const replyId = reply.body.data?.sendChatMessage.id;
    expect(await old.nextChat()).toMatchObject({
      id: Number(replyId),
      username_from: modern,
      username_to: legacy,
      message: 'hi old',
    });

    // A refused frame is answered on the socket, which stays open.
    old.send({ username_to: unique('nobody'), message: 'lost' });
    expect(await old.frames.next()).toEqual({
      result: null,
      message: [{ message: expect.stringMatching(/Unknown user/) }],
    });

    // A malformed frame closes only that socket; the user's other socket keeps working.
    const second = await chatter(b, legacyJwt);
    second.send('not json');
    expect((await second.closed).code).toBe(1007);
    old.send({ username_to: modern, message: 'still here' });
    expect((await old.nextChat())['message']).toBe('still here');
  });
});
