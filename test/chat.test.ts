import { randomBytes } from 'node:crypto';
import type { ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import {
  ChatDocument,
  type ChatSubscription,
  ConnectionsDocument,
  MessagesDocument,
  SendChatMessageDocument,
  UpsertUserDocument,
} from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { gql, type ResultQueue, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

type ChatQueue = ResultQueue<ExecutionResult<ChatSubscription>>;
type ChatEvent = ChatSubscription['chat'];
type Message = Extract<ChatEvent, { __typename: 'ChatMessage' }>;
type State = Extract<ChatEvent, { __typename: 'ConnectionState' }>;

/** Unique ids per test, so tests never see each other's users or groups. */
const unique = (name: string) => `${name}-${randomBytes(4).toString('hex')}`;

async function nextEvent(queue: ChatQueue, timeoutMs = WAIT_MS): Promise<ChatEvent> {
  const result = await queue.next(timeoutMs);
  if (result.errors || !result.data) throw new Error(`chat error: ${JSON.stringify(result)}`);
  return result.data.chat;
}

/** The next ChatMessage, skipping connection changes. */
async function nextMessage(queue: ChatQueue, timeoutMs = WAIT_MS): Promise<Message> {
  for (;;) {
    const event = await nextEvent(queue, timeoutMs);
    if (event.__typename === 'ChatMessage') return event;
  }
}

/** The next ConnectionState of `userId`, skipping everything else. */
async function nextStateOf(queue: ChatQueue, userId: string): Promise<State> {
  for (;;) {
    const event = await nextEvent(queue);
    if (event.__typename === 'ConnectionState' && event.userId === userId) return event;
  }
}

describe('chat across two instances on one Redis', () => {
  const { a, b, ws, sse } = useInstances({ CHAT_MAX_LENGTH: '40', ANONYMOUS_CONNECTIONS: '20' });

  const send = async (server: TestServer, token: string, to: string, text: string) => {
    const r = await gql(server.url, SendChatMessageDocument, { to, text }, token);
    if (!r.body.data) throw new Error(`send failed: ${JSON.stringify(r.body)}`);
    return r.body.data.sendChatMessage;
  };
  const service = () => a.token(unique('svc'), { service: true });
  const createUser = async (userId: string, group: string | null) => {
    const r = await gql(a.url, UpsertUserDocument, { input: { userId, group } }, await service());
    expect(r.body.data?.upsertUser).toEqual({ userId, group });
  };

  /**
   * Waits until every queue's subscription is live: sends warm-up messages (each must reach
   * every queue; a subscription that is not yet listening misses early ones) until all queues
   * got one, then a sync message that every queue must get, and drops everything before it.
   */
  async function untilLive(queues: ChatQueue[], warmUp: () => Promise<{ id: string }>) {
    const live = new Set<ChatQueue>();
    for (let attempt = 0; attempt < 40 && live.size < queues.length; attempt++) {
      await warmUp();
      await Promise.all(
        queues.map(async (q) => {
          if (live.has(q)) return;
          if (await nextMessage(q, 250).catch(() => null)) live.add(q);
        }),
      );
    }
    expect(live.size).toBe(queues.length);
    const sync = await warmUp();
    for (const q of queues) while ((await nextMessage(q)).id !== sync.id);
  }

  it('delivers a message once to every connection of both parties, with the stored id', async () => {
    const group = unique('g');
    const [ua, ub] = [unique('a'), unique('b')];
    const ta = await a.token(ua, { group });
    const tb = await b.token(ub, { group });
    await createUser(ub, group);
    const queues = [
      ws(a, ta).subscribe(ChatDocument, {}),
      sse(b, ta).subscribe(ChatDocument, {}),
      ws(b, tb).subscribe(ChatDocument, {}),
      sse(a, tb, true).subscribe(ChatDocument, {}),
    ];
    await untilLive(queues, () => send(a, ta, ub, 'warm-up'));

    const sent = await send(b, ta, ub, 'hello B');
    expect(sent).toMatchObject({ from: ua, to: ub, text: 'hello B', imagePath: null });
    expect(sent.id).toMatch(/^\d+$/);
    for (const q of queues)
      expect(await nextMessage(q)).toEqual({ __typename: 'ChatMessage', ...sent });

    // Each got it exactly once: the next message everywhere is the reply.
    const reply = await send(a, tb, ua, 'hello A');
    for (const q of queues) expect((await nextMessage(q)).id).toBe(reply.id);

    const history = await gql(a.url, MessagesDocument, { peerId: ub, limit: 2 }, ta);
    expect(history.body.data?.messages).toEqual([sent, reply]);
    const fromB = await gql(b.url, MessagesDocument, { peerId: ua, limit: 1 }, tb);
    expect(fromB.body.data?.messages).toEqual([reply]);
  });

  it('filters one conversation with peerId', async () => {
    const group = unique('g');
    const [ua, ub, uc] = [unique('a'), unique('b'), unique('c')];
    const [ta, tb, tc] = await Promise.all([ua, ub, uc].map((u) => a.token(u, { group })));
    await createUser(uc, group);
    await createUser(ub, group);
    const all = ws(a, ta as string).subscribe(ChatDocument, {});
    const withB = ws(b, ta as string).subscribe(ChatDocument, { peerId: ub });
    await untilLive([all, withB], () => send(a, ta as string, ub, 'warm-up'));
    const fromC = await send(b, tc as string, ua, 'from C');
    const fromB = await send(b, tb as string, ua, 'from B');
    expect((await nextMessage(all)).id).toBe(fromC.id);
    expect((await nextMessage(all)).id).toBe(fromB.id);
    // The conversation stream skipped C's message: B's is the next it got.
    expect((await nextMessage(withB)).id).toBe(fromB.id);
  });

  it('refuses other groups, unknown users, empty and oversized messages, storing nothing', async () => {
    const [ua, other, inGroup] = [unique('a'), unique('o'), unique('i')];
    const group = unique('g');
    const ta = await a.token(ua, { group });
    await createUser(other, unique('elsewhere'));
    await createUser(inGroup, group);
    const codeOf = async (variables: { to: string; text?: string | null; imagePath?: string }) => {
      const r = await gql(b.url, SendChatMessageDocument, variables, ta);
      expect(r.body.data ?? null).toBeNull();
      return r.body.errors?.[0]?.extensions?.['code'];
    };
    // A user of another group is answered exactly as an unknown user (no probing of groups).
    const nobody = unique('nobody');
    const refusal = async (to: string) => {
      const r = await gql(b.url, SendChatMessageDocument, { to, text: 'hi' }, ta);
      return JSON.stringify(r.body).replaceAll(JSON.stringify(to).slice(1, -1), '<user>');
    };
    expect(await codeOf({ to: other, text: 'hi' })).toBe('NOT_FOUND');
    expect(await codeOf({ to: nobody, text: 'hi' })).toBe('NOT_FOUND');
    expect(await refusal(other)).toBe(await refusal(nobody));
    expect(await codeOf({ to: inGroup })).toBe('BAD_USER_INPUT');
    expect(await codeOf({ to: inGroup, text: '' })).toBe('BAD_USER_INPUT');
    expect(await codeOf({ to: inGroup, text: 'x'.repeat(41) })).toBe('BAD_USER_INPUT');
    const anonymous = await gql(a.url, SendChatMessageDocument, { to: inGroup, text: 'hi' });
    expect(anonymous.body.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');

    expect(await a.app.db.prisma.chatMessage.count({ where: { fromId: ua } })).toBe(0);
    const history = async (peerId: string) => {
      const r = await gql(a.url, MessagesDocument, { peerId }, ta);
      expect(r.body.errors?.[0]?.extensions?.['code']).toBe('NOT_FOUND');
      return JSON.stringify(r.body).replaceAll(peerId, '<user>');
    };
    expect(await history(other)).toBe(await history(nobody));

    // The limits are inclusive and an image alone is enough.
    const ok = await gql(a.url, SendChatMessageDocument, { to: inGroup, imagePath: '/i.png' }, ta);
    expect(ok.body.data?.sendChatMessage).toMatchObject({ text: null, imagePath: '/i.png' });
    const longest = await send(a, ta, inGroup, 'x'.repeat(40));
    expect(longest.text).toHaveLength(40);
  });

  it('pages back through 120 messages in order, without gaps or repeats', async () => {
    const group = unique('g');
    const [ua, ub] = [unique('a'), unique('b')];
    const ta = await a.token(ua, { group });
    const tb = await b.token(ub, { group });
    await Promise.all([createUser(ua, group), createUser(ub, group)]);
    const sent: string[] = [];
    for (let i = 0; i < 120; i++) {
      const [server, token, to] = i % 3 === 0 ? [b, tb, ua] : [a, ta, ub];
      sent.push((await send(server, token, to, `m${i}`)).id);
    }
    const history = (before: string | null) =>
      gql(b.url, MessagesDocument, { peerId: ub, before, limit: 50 }, ta);
    const seen: string[] = [];
    let before: string | null = null;
    for (let page = 0; page < 10; page++) {
      const r: Awaited<ReturnType<typeof history>> = await history(before);
      const messages = r.body.data?.messages ?? [];
      if (messages.length === 0) break;
      expect(messages.length).toBeLessThanOrEqual(50);
      seen.unshift(...messages.map((m) => m.id));
      before = messages[0]?.id ?? null;
    }
    expect(seen).toEqual(sent);
    expect(sent.map(Number)).toEqual([...sent.map(Number)].sort((x, y) => x - y));

    const capped = await gql(a.url, MessagesDocument, { peerId: ua, limit: 1000 }, tb);
    expect(capped.body.data?.messages.map((m) => m.id)).toEqual(sent);
    const bad = await gql(a.url, MessagesDocument, { peerId: ub, before: 'x' }, ta);
    expect(bad.body.errors?.[0]?.extensions?.['code']).toBe('BAD_USER_INPUT');
    const zero = await gql(a.url, MessagesDocument, { peerId: ub, limit: 0 }, ta);
    expect(zero.body.errors?.[0]?.extensions?.['code']).toBe('BAD_USER_INPUT');
    const unknown = await gql(a.url, MessagesDocument, { peerId: unique('nobody') }, ta);
    expect(unknown.body.errors?.[0]?.extensions?.['code']).toBe('NOT_FOUND');
  });

  it('reports first and last connections of group members, across instances', async () => {
    const group = unique('g');
    const [ua, ub, uc] = [unique('a'), unique('b'), unique('c')];
    const ta = await a.token(ua, { group });
    const tb = await b.token(ub, { group });
    await createUser(uc, group);
    await createUser(ub, group);
    const watcher = ws(a, ta).subscribe(ChatDocument, {});
    await untilLive([watcher], () => send(a, ta, uc, 'warm-up'));
    const activeOf = async (userId: string) => {
      const r = await gql(b.url, ConnectionsDocument, {}, ta);
      return r.body.data?.connections.find((c) => c.userId === userId)?.active;
    };
    expect(await activeOf(ub)).toBe(false);

    // B's first connection, on the other instance: active.
    const first = ws(b, tb, false);
    expect(await nextStateOf(watcher, ub)).toEqual({
      __typename: 'ConnectionState',
      userId: ub,
      active: true,
    });
    expect(await activeOf(ub)).toBe(true);

    // A second connection (SSE on A's instance), then closing the first: no change.
    const second = sse(a, tb);
    const secondStream = second.subscribe(ChatDocument, {});
    await untilLive([secondStream], () => send(b, tb, uc, 'warm-up'));
    await first.dispose();
    const marker = await send(a, ta, uc, 'marker');
    for (;;) {
      const event = await nextEvent(watcher);
      if (event.__typename === 'ChatMessage' && event.id === marker.id) break;
      expect(event.__typename === 'ConnectionState' && event.userId === ub).toBe(false);
    }
    expect(await activeOf(ub)).toBe(true);

    // Closing the last one: inactive.
    second.dispose();
    expect(await nextStateOf(watcher, ub)).toMatchObject({ userId: ub, active: false });
    expect(await activeOf(ub)).toBe(false);
    expect(await a.app.db.prisma.user.count({ where: { group } })).toBe(3);
  });

  it('refuses anonymous chat streams and queries', async () => {
    const client = ws(a);
    const stream = client.subscribe(ChatDocument, {});
    const result = await stream.next();
    expect(result.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');
    await stream.waitForEnd();
    const r = await gql(a.url, ConnectionsDocument, {});
    expect(r.body.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');
  });
});
