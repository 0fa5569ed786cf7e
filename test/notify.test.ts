import type { ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import { channelOwner } from '../src/domain/notify.ts';
import {
  NotifyDocument,
  type NotifySubscription,
  PublishDocument,
  ViewerDocument,
} from './generated/graphql.ts';
import { expiredToken } from './support/app.ts';
import { gql, type ResultQueue } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

type NotifyQueue = ResultQueue<ExecutionResult<NotifySubscription>>;

/** The channel id of a notify stream (its first event). */
async function channelOf(queue: NotifyQueue): Promise<string> {
  const first = await queue.next();
  expect(first.errors).toBeUndefined();
  const event = first.data?.notify;
  if (event?.__typename !== 'NotifyChannel')
    throw new Error(`expected NotifyChannel, got ${JSON.stringify(first)}`);
  return event.channelId;
}

async function nextMessage(queue: NotifyQueue) {
  const result = await queue.next();
  expect(result.errors).toBeUndefined();
  const event = result.data?.notify;
  if (event?.__typename !== 'NotifyMessage')
    throw new Error(`expected NotifyMessage, got ${JSON.stringify(result)}`);
  return event;
}

// OS3 internal/notify/channel_id.go: `strings.Split(cid, ":")`, three parts, the user in the
// middle; host and counter are not checked. Our user ids are strings and may hold ':', so the
// host ends at the first ':' and the counter starts after the last one.
describe('channelOwner', () => {
  it('reads the user from the middle of any <host>:<uid>:<counter>', () => {
    expect(channelOwner('foo:1:0')).toBe('1');
    expect(channelOwner('server:1:2')).toBe('1');
    expect(channelOwner('AbCd1234:alice:17')).toBe('alice');
    expect(channelOwner(':1:')).toBe('1');
    expect(channelOwner('host:urn:user:5:3')).toBe('urn:user:5');
    for (const malformed of ['', 'foobar', 'a:1', '1', 'a::0', '::']) {
      expect([malformed, channelOwner(malformed)]).toEqual([malformed, null]);
    }
  });
});

describe('notify across two instances on one Redis', () => {
  const { a, b, ws, sse } = useInstances({ ANONYMOUS_CONNECTIONS: '20' });

  it('answers viewer for a token and null for anonymous', async () => {
    const token = await a.token('42', { group: 'g1' });
    const me = await gql(a.url, ViewerDocument, {}, token);
    expect(me.body.data?.viewer).toEqual({ userId: '42', group: 'g1', isService: false });
    const anonymous = await gql(a.url, ViewerDocument, {});
    expect(anonymous.body.data?.viewer).toBeNull();
  });

  it('delivers to users over graphql-ws and both SSE modes on both instances', async () => {
    const [t1, t2, t3, t4] = await Promise.all(['101', '102', '103', '104'].map((u) => a.token(u)));
    const sender = ws(a, t1 as string).subscribe(NotifyDocument, {});
    const overWs = ws(a, t2 as string).subscribe(NotifyDocument, {});
    const overSse = sse(b, t3 as string).subscribe(NotifyDocument, {});
    const overSingle = sse(b, t4 as string, true).subscribe(NotifyDocument, {});
    const senderChannel = await channelOf(sender);
    for (const q of [overWs, overSse, overSingle]) await channelOf(q);
    expect(senderChannel).toMatch(/^[a-zA-Z0-9]{8}:101:\d+$/);

    const publish = await gql(
      b.url,
      PublishDocument,
      {
        input: {
          channelId: senderChannel,
          name: 'greeting',
          message: { hello: 'world' },
          toUsers: ['102', '103', '104'],
        },
      },
      t1,
    );
    expect(publish.body).toEqual({ data: { publish: true } });
    for (const q of [overWs, overSse, overSingle]) {
      expect(await nextMessage(q)).toEqual({
        __typename: 'NotifyMessage',
        senderUserId: '101',
        senderChannelId: senderChannel,
        name: 'greeting',
        message: { hello: 'world' },
      });
    }
  });

  it('routes by meeting, user, channel and to all, including the sender', async () => {
    const [t1, t2, t3] = await Promise.all(['201', '202', '203'].map((u) => b.token(u)));
    const sender = ws(a, t1 as string).subscribe(NotifyDocument, { meetingId: '7' });
    const inMeeting = ws(b, t2 as string).subscribe(NotifyDocument, { meetingId: '7' });
    const otherMeeting = sse(b, t3 as string).subscribe(NotifyDocument, { meetingId: '8' });
    const senderChannel = await channelOf(sender);
    const inMeetingChannel = await channelOf(inMeeting);
    await channelOf(otherMeeting);
    const send = (name: string, targets: Record<string, unknown>) =>
      gql(a.url, PublishDocument, { input: { channelId: senderChannel, name, ...targets } }, t1);

    await send('m', { toMeeting: '7' });
    expect((await nextMessage(sender)).name).toBe('m');
    expect((await nextMessage(inMeeting)).name).toBe('m');

    await send('c', { toChannels: [inMeetingChannel] });
    expect((await nextMessage(inMeeting)).name).toBe('c');

    await send('u', { toUsers: ['203'] });
    // The meeting-8 stream gets the user message first: it never saw 'm' or 'c'.
    expect((await nextMessage(otherMeeting)).name).toBe('u');

    await send('all', { toAll: true });
    for (const q of [sender, inMeeting, otherMeeting])
      expect((await nextMessage(q)).name).toBe('all');
    // Nothing else arrived before 'all': the sender did not get 'c' or 'u'.
    expect(sender.pending).toHaveLength(0);
  });

  it('refuses bad input with clear errors and keeps serving', async () => {
    const [t1, t2] = await Promise.all(['301', '302'].map((u) => a.token(u)));
    const own = ws(a, t1 as string).subscribe(NotifyDocument, {});
    const channelId = await channelOf(own);
    const foreign = await channelOf(ws(a, t2 as string).subscribe(NotifyDocument, {}));
    const publish = (input: Record<string, unknown>, token: string | null = t1 as string) =>
      gql(
        a.url,
        PublishDocument,
        { input: { channelId, name: 'n', toAll: true, ...input } } as never,
        token ?? undefined,
      );
    const codeOf = (r: Awaited<ReturnType<typeof publish>>) =>
      r.body.errors?.[0]?.extensions?.['code'];

    expect(codeOf(await publish({ name: '' }))).toBe('BAD_USER_INPUT');
    expect(codeOf(await publish({ channelId: foreign }))).toBe('BAD_USER_INPUT');
    expect(codeOf(await publish({ channelId: 'foobar' }))).toBe('BAD_USER_INPUT');
    expect(codeOf(await publish({ toAll: false }))).toBe('BAD_USER_INPUT');
    expect(codeOf(await publish({ name: 'applause' }))).toBe('BAD_USER_INPUT');
    expect(codeOf(await publish({}, null))).toBe('UNAUTHENTICATED');

    const missingName = await gql(
      a.url,
      'mutation { publish(input: { channelId: "x", toAll: true }) }',
      {},
      t1,
    );
    expect(missingName.status).toBe(400);
    expect(missingName.body.errors?.[0]?.message).toMatch(/name/);

    const malformed = await fetch(`${a.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${t1}` },
      body: '{"query": "{ viewer { userId }',
    });
    expect(malformed.status).toBe(400);

    const expired = await expiredToken('301');
    const expiredResult = await gql(a.url, ViewerDocument, {}, expired);
    expect(expiredResult.status).toBe(401);
    expect(expiredResult.body.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');

    const forged = `${(t1 as string).slice(0, -4)}AAAA`;
    expect((await gql(a.url, ViewerDocument, {}, forged)).status).toBe(401);

    const huge = await fetch(`${a.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        query: '{ viewer { userId } }',
        variables: { pad: 'x'.repeat(2_000_000) },
      }),
    });
    expect(huge.status).toBe(413);

    const tooBig = await publish({ message: 'y'.repeat(70_000) });
    expect(codeOf(tooBig)).toBe('BAD_USER_INPUT');

    // Still serving, and nothing was published by the refused calls.
    await publish({ name: 'ok' });
    expect((await nextMessage(own)).name).toBe('ok');
  });

  it('refuses notify subscriptions from anonymous callers', async () => {
    const anonymous = ws(a);
    const result = await anonymous.subscribe(NotifyDocument, {}).next();
    expect(result.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');
  });
});
