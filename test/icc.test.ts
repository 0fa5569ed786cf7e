import { randomInt } from 'node:crypto';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { ConfigureMeetingDocument, NotifyDocument, PublishDocument } from './generated/graphql.ts';
import { startServer, TEST_TOKEN_KEY, type TestServer } from './support/app.ts';
import { gql, nextMatching, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { type JsonLinesReader, readJsonLines } from './support/json-lines.ts';
import { createTestDatabase } from './support/postgres.ts';
import { requireRedis } from './support/redis.ts';

/** An OpenSlides 4 access token: the user is the integer `userId` claim, there is no `sub`. */
function openSlidesToken(userId: number): Promise<string> {
  return new SignJWT({ userId })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(TEST_TOKEN_KEY));
}

const osAuth = (token: string) => ({ authentication: `bearer ${token}` });
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
/** Unique integer meeting ids: the ICC speaks integers. */
const uniqueMeeting = () => randomInt(1_000_000, 2_000_000_000);

describe('ICC endpoints across two instances on one Redis', () => {
  const { a, b, ws, onCleanup } = useInstances({
    APPLAUSE_INTERVAL_MS: '100',
    APPLAUSE_WINDOW_S: '3',
  });

  const icc = (server: TestServer, path: string) => `${server.url}/system/icc${path}`;
  const stream = async (url: string, headers: Record<string, string> = {}) => {
    const reader = await readJsonLines(url, headers);
    onCleanup(reader.close);
    return reader;
  };
  const post = async (url: string, body: string | undefined, headers: Record<string, string>) => {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      ...(body === undefined ? {} : { body }),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    const text = await response.text();
    return { status: response.status, text, json: text ? JSON.parse(text) : undefined };
  };
  const channelOf = async (reader: JsonLinesReader) => {
    const first = (await reader.lines.next()) as { channel_id: string };
    expect(first).toEqual({ channel_id: expect.any(String) });
    return first.channel_id;
  };

  it('answers health', async () => {
    const response = await fetch(icc(a, '/health'));
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ healthy: true, service: 'icc' });
  });

  it('refuses anonymous and invalid requests with the original bodies', async () => {
    const notAllowed = { error: 'not-allowed', msg: expect.any(String) };
    const invalid = { error: 'invalid', msg: expect.any(String) };
    const anonymousNotify = await stream(icc(a, '/notify'));
    expect(anonymousNotify.status).toBe(401);
    expect(anonymousNotify.body).toEqual(notAllowed);
    const anonymousPublish = await post(icc(a, '/notify/publish'), '{}', {});
    expect([anonymousPublish.status, anonymousPublish.json]).toEqual([401, notAllowed]);
    const anonymousApplause = await post(icc(a, '/applause/send?meeting_id=1'), undefined, {});
    expect([anonymousApplause.status, anonymousApplause.json]).toEqual([401, notAllowed]);
    const badToken = await post(icc(a, '/notify/publish'), '{}', osAuth('x.y.z'));
    expect([badToken.status, badToken.json]).toEqual([401, notAllowed]);

    const token = await openSlidesToken(41);
    const other = await openSlidesToken(42);
    const own = await stream(icc(b, '/notify'), osAuth(token));
    const channelId = await channelOf(own);
    const foreign = await channelOf(await stream(icc(b, '/notify'), osAuth(other)));
    const publish = (body: string) => post(icc(a, '/notify/publish'), body, osAuth(token));

    for (const body of [
      '{123',
      '{"to_users":1}',
      JSON.stringify({ channel_id: channelId, name: 'n', to_channels: foreign }),
      JSON.stringify({ channel_id: foreign, name: 'n', to_users: [41] }),
      JSON.stringify({ channel_id: 'foobar', name: 'n', to_users: [41] }),
      JSON.stringify({ channel_id: channelId, to_users: [41] }),
      JSON.stringify({ channel_id: channelId, name: 'n', to_meeting: 'one' }),
    ]) {
      const result = await publish(body);
      expect([body, result.status, result.json]).toEqual([body, 400, invalid]);
    }
    const badMeeting = await stream(icc(a, '/notify?meeting_id=abc'), osAuth(token));
    expect([badMeeting.status, badMeeting.body]).toEqual([400, invalid]);
    const missingMeeting = await post(icc(a, '/applause/send'), undefined, osAuth(token));
    expect([missingMeeting.status, missingMeeting.json]).toEqual([400, invalid]);
    const applauseWithoutMeeting = await stream(icc(a, '/applause'), osAuth(token));
    expect([applauseWithoutMeeting.status, applauseWithoutMeeting.body]).toEqual([400, invalid]);
    expect((await fetch(icc(a, '/nope'))).status).toBe(404);

    // A valid publish: 200 with an empty body, and nothing refused above was delivered.
    const ok = await publish(JSON.stringify({ channel_id: channelId, name: 'ok', to_users: [41] }));
    expect([ok.status, ok.text]).toEqual([200, '']);
    expect(await own.lines.next()).toEqual({
      sender_user_id: 41,
      sender_channel_id: channelId,
      name: 'ok',
      message: null,
    });
  });

  // The original ICC (internal/notify/channel_id.go) reads the user from the middle part of any
  // `<host>:<uid>:<counter>`, and its own test publishes with `server:1:2`; its validateMessage
  // (internal/notify/notify.go) checks only the channel id's user and a non-empty name, so a
  // message without a target (it reaches no one) and the name "applause" are accepted.
  it('accepts any <host>:<uid>:<counter>, no target and the name applause, as the original ICC', async () => {
    const uid = randomInt(100_000, 2_000_000_000);
    const token = await openSlidesToken(uid);
    const own = await stream(icc(b, '/notify'), osAuth(token));
    await channelOf(own);
    const publish = (body: object) =>
      post(icc(a, '/notify/publish'), JSON.stringify(body), osAuth(token));

    for (const channelId of [`server:${uid}:2`, `foo:${uid}:0`, `:${uid}:`]) {
      const ok = await publish({ channel_id: channelId, name: channelId, to_users: [uid] });
      expect([channelId, ok.status, ok.text]).toEqual([channelId, 200, '']);
      expect(await own.lines.next()).toEqual({
        sender_user_id: uid,
        sender_channel_id: channelId,
        name: channelId,
        message: null,
      });
    }
    // Still the sender's own channel only, and still three parts.
    for (const channelId of [`server:${uid + 1}:2`, `server:${uid}`, `${uid}`]) {
      const refused = await publish({ channel_id: channelId, name: 'n', to_users: [uid] });
      expect([channelId, refused.status]).toEqual([channelId, 400]);
    }

    const untargeted = await publish({ channel_id: `h:${uid}:1`, name: 'nowhere', message: 1 });
    expect([untargeted.status, untargeted.text]).toEqual([200, '']);
    const applause = await publish({ channel_id: `h:${uid}:1`, name: 'applause', to_users: [uid] });
    expect([applause.status, applause.text]).toEqual([200, '']);
    // The untargeted message reached no one: the next line is the applause message.
    expect(await own.lines.next()).toEqual({
      sender_user_id: uid,
      sender_channel_id: `h:${uid}:1`,
      name: 'applause',
      message: null,
    });
    expect(own.lines.pending).toHaveLength(0);

    // GraphQL's publish keeps its stricter contract: a target is required, "applause" reserved.
    const gqlToken = await a.token(String(uid));
    for (const input of [
      { channelId: `h:${uid}:1`, name: 'nowhere' },
      { channelId: `h:${uid}:1`, name: 'applause', toUsers: [String(uid)] },
    ]) {
      const refused = await gql(a.url, PublishDocument, { input }, gqlToken);
      expect(refused.body.errors?.[0]?.extensions?.['code']).toBe('BAD_USER_INPUT');
    }
  });

  it('shares channels with GraphQL clients both ways, on both instances', async () => {
    const meetingId = uniqueMeeting();
    const legacyToken = await openSlidesToken(51);
    const gqlToken = await a.token('52');
    const legacy = await stream(icc(a, `/notify?meeting_id=${meetingId}`), osAuth(legacyToken));
    expect(legacy.status).toBe(200);
    expect(legacy.contentType).toBe('application/octet-stream');
    const legacyChannel = await channelOf(legacy);
    // Our own tokens work on the ICC too.
    const sameUser = await stream(icc(b, '/notify'), bearer(await a.token('51')));
    const sameUserChannel = await channelOf(sameUser);

    const client = ws(b, gqlToken);
    const graph = client.subscribe(NotifyDocument, { meetingId: String(meetingId) });
    const first = await graph.next();
    const graphChannel =
      first.data?.notify.__typename === 'NotifyChannel' ? first.data.notify.channelId : '';

    // GraphQL -> ICC, to the meeting: the legacy stream in the meeting gets it.
    const toMeeting = await gql(
      a.url,
      PublishDocument,
      {
        input: {
          channelId: graphChannel,
          name: 'from-graphql',
          message: { n: 1 },
          toMeeting: String(meetingId),
        },
      },
      gqlToken,
    );
    expect(toMeeting.body.data?.publish).toBe(true);
    expect(await legacy.lines.next()).toEqual({
      sender_user_id: 52,
      sender_channel_id: graphChannel,
      name: 'from-graphql',
      message: { n: 1 },
    });
    expect((await graph.next()).data?.notify).toMatchObject({ name: 'from-graphql' });

    // ICC -> GraphQL, to a channel, from the other instance.
    const toChannel = await post(
      icc(b, '/notify/publish'),
      JSON.stringify({
        channel_id: legacyChannel,
        to_channels: [graphChannel],
        name: 'from-icc',
        message: [1, 2],
      }),
      osAuth(legacyToken),
    );
    expect(toChannel.status).toBe(200);
    expect((await graph.next()).data?.notify).toEqual({
      __typename: 'NotifyMessage',
      senderUserId: '51',
      senderChannelId: legacyChannel,
      name: 'from-icc',
      message: [1, 2],
    });

    // To users: every stream of user 51 (the sender's own included) on both instances.
    await post(
      icc(a, '/notify/publish'),
      JSON.stringify({ channel_id: legacyChannel, to_users: [51], name: 'to-me' }),
      osAuth(legacyToken),
    );
    for (const reader of [legacy, sameUser]) {
      expect(await reader.lines.next()).toMatchObject({ name: 'to-me', sender_user_id: 51 });
    }
    // The meeting again: the meeting-less stream of user 51 did not get 'from-graphql' or this.
    await post(
      icc(a, '/notify/publish'),
      JSON.stringify({ channel_id: legacyChannel, to_meeting: meetingId, name: 'meeting-2' }),
      osAuth(legacyToken),
    );
    expect(await legacy.lines.next()).toMatchObject({ name: 'meeting-2' });
    expect((await graph.next()).data?.notify).toMatchObject({ name: 'meeting-2' });
    await post(
      icc(a, '/notify/publish'),
      JSON.stringify({ channel_id: sameUserChannel, to_channels: [sameUserChannel], name: 'end' }),
      bearer(await a.token('51')),
    );
    expect(await sameUser.lines.next()).toMatchObject({ name: 'end' });
    expect(sameUser.lines.pending).toHaveLength(0);
  });

  it('streams applause levels and present users, and refuses where not allowed', async () => {
    const meetingId = uniqueMeeting();
    const watcherToken = await openSlidesToken(61);
    const watcher = await stream(icc(a, `/applause?meeting_id=${meetingId}`), osAuth(watcherToken));
    expect(watcher.status).toBe(200);
    expect(watcher.contentType).toBe('application/json');
    expect(await watcher.lines.next()).toEqual({ level: 0, present_users: 1 });

    const other = await stream(
      icc(b, `/applause?meeting_id=${meetingId}`),
      osAuth(await openSlidesToken(62)),
    );
    expect(await other.lines.next()).toEqual({ level: 0, present_users: 2 });
    await nextMatching(watcher.lines, (l) => (l as { present_users: number }).present_users === 2);

    const senders = await Promise.all([63, 64, 65].map(openSlidesToken));
    const sent = await Promise.all(
      senders.map((t, i) =>
        post(icc(i % 2 ? a : b, `/applause/send?meeting_id=${meetingId}`), undefined, osAuth(t)),
      ),
    );
    for (const r of sent) expect([r.status, r.text]).toEqual([200, '']);
    for (const reader of [watcher, other]) {
      const top = await nextMatching(reader.lines, (l) => (l as { level: number }).level >= 3);
      expect(top).toEqual({ level: 3, present_users: 2 });
    }
    other.close();
    await nextMatching(watcher.lines, (l) => (l as { present_users: number }).present_users === 1);

    // Refusals: a meeting with applause disabled, and a meeting with members.
    const service = await a.token('svc', { service: true });
    const disabled = uniqueMeeting();
    const closed = uniqueMeeting();
    await gql(
      b.url,
      ConfigureMeetingDocument,
      { input: { id: String(disabled), applauseEnabled: false } },
      service,
    );
    await gql(
      b.url,
      ConfigureMeetingDocument,
      { input: { id: String(closed), memberIds: ['62'] } },
      service,
    );
    const notAllowed = { error: 'not-allowed', msg: expect.any(String) };
    const refusedSend = await post(
      icc(a, `/applause/send?meeting_id=${disabled}`),
      undefined,
      osAuth(watcherToken),
    );
    expect([refusedSend.status, refusedSend.json]).toEqual([400, notAllowed]);
    const nonMember = await stream(icc(a, `/applause?meeting_id=${closed}`), osAuth(watcherToken));
    expect([nonMember.status, nonMember.body]).toEqual([400, notAllowed]);
    const nonMemberNotify = await stream(
      icc(a, `/notify?meeting_id=${closed}`),
      osAuth(watcherToken),
    );
    expect([nonMemberNotify.status, nonMemberNotify.body]).toEqual([400, notAllowed]);
    const member = await stream(
      icc(a, `/notify?meeting_id=${closed}`),
      osAuth(await openSlidesToken(62)),
    );
    expect(member.status).toBe(200);
  });

  it('ends a legacy stream when the server shuts down', async () => {
    const [db, redis] = await Promise.all([createTestDatabase(), requireRedis()]);
    const c = await startServer({
      DATABASE_URL: db.url,
      REDIS_URL: redis.url,
      REDIS_PREFIX: redis.prefix,
    });
    try {
      const reader = await stream(`${c.url}/system/icc/notify`, osAuth(await openSlidesToken(71)));
      await channelOf(reader);
      await c.stop();
      await reader.lines.waitForEnd();
    } finally {
      await c.stop();
      await db.drop();
    }
  });
});
