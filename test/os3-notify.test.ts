import { describe, expect, it } from 'vitest';
import { ApplauseDocument, NotifyDocument } from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { nextMatching, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { type JsonLinesReader, readJsonLines } from './support/json-lines.ts';

const OS3_MEETING = '3003';

interface Line {
  name?: string;
  sender_user_id?: number | string;
  message?: { level?: number; presentUsers?: number } | unknown;
}

describe('OpenSlides 3 notify and applause across two instances on one Redis', () => {
  const { a, b, ws, sse, onCleanup } = useInstances({
    APPLAUSE_INTERVAL_MS: '100',
    APPLAUSE_WINDOW_S: '2',
    OS3_MEETING_ID: OS3_MEETING,
  });

  const url = (server: TestServer, path: string) => `${server.url}/system${path}`;
  const auth = (token: string) => ({ authorization: `Bearer ${token}` });
  /** Opens /system/notify and returns the stream after its first two lines, with the channel. */
  const notify = async (server: TestServer, token: string) => {
    const reader = await readJsonLines(url(server, '/notify'), auth(token));
    onCleanup(reader.close);
    expect(reader.status).toBe(200);
    expect(reader.contentType).toBe('application/octet-stream');
    expect(await reader.lines.next()).toEqual({ connected: true });
    const channel = (await reader.lines.next()) as { channel_id: string };
    expect(channel).toEqual({ channel_id: expect.stringMatching(/^[a-zA-Z0-9]{8}:.+:\d+$/) });
    return { reader, channelId: channel.channel_id };
  };
  const post = async (server: TestServer, path: string, body: unknown, token?: string) => {
    const response = await fetch(url(server, path), {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? auth(token) : {}) },
      body: typeof body === 'string' ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    const text = await response.text();
    return { status: response.status, text, json: text ? JSON.parse(text) : undefined };
  };
  const nextMessage = async (reader: JsonLinesReader) => (await reader.lines.next()) as Line;

  it('answers health and refuses bad requests with OS3 error bodies', async () => {
    const health = await fetch(url(a, '/health'));
    expect(await health.json()).toEqual({ healthy: true });

    const authRequired = { error: { type: 'auth_required', msg: expect.any(String) } };
    const invalid = { error: { type: 'invalid_request', msg: expect.any(String) } };
    const anonymous = await readJsonLines(url(a, '/notify'));
    expect([anonymous.status, anonymous.body]).toEqual([400, authRequired]);
    expect(await post(a, '/notify/send', { name: 'x', to_all: true })).toMatchObject({
      status: 400,
      json: authRequired,
    });
    expect(await post(a, '/applause', '')).toMatchObject({ status: 400, json: authRequired });

    const token = await a.token('31');
    const { reader, channelId } = await notify(b, token);
    const send = (body: unknown) => post(a, '/notify/send', body, token);
    for (const body of [
      '{123',
      { channel_id: channelId, name: 'applause', to_all: true },
      { channel_id: channelId, name: '', to_all: true },
      { channel_id: channelId, name: 'n', to_channels: channelId },
      { channel_id: channelId, name: 'n', to_all: 'yes' },
      { channel_id: 'foobar', name: 'n', to_all: true },
      { channel_id: channelId, name: 'n' },
    ]) {
      expect([body, await send(body)]).toMatchObject([body, { status: 400, json: invalid }]);
    }
    const wrongMethod = await fetch(url(a, '/notify/send'), {
      method: 'PUT',
      headers: auth(token),
    });
    expect(wrongMethod.status).toBe(400);

    // Nothing refused was delivered: the next line is this marker.
    expect(await send({ channel_id: channelId, name: 'marker', to_users: [31] })).toMatchObject({
      status: 200,
      text: '',
    });
    expect(await nextMessage(reader)).toEqual({
      sender_user_id: 31,
      sender_channel_id: channelId,
      name: 'marker',
      message: null,
    });
  });

  it('delivers to all, users and channels, to OS3 and GraphQL clients on both instances', async () => {
    const [t1, t2, t3] = (await Promise.all(['32', '33', '34'].map((u) => a.token(u)))) as [
      string,
      string,
      string,
    ];
    const one = await notify(a, t1);
    const two = await notify(b, t2);
    const client = ws(b, t3);
    const graph = client.subscribe(NotifyDocument, {});
    const first = await graph.next();
    const graphChannel =
      first.data?.notify.__typename === 'NotifyChannel' ? first.data.notify.channelId : '';

    const send = (body: Record<string, unknown>) =>
      post(b, '/notify/send', { channel_id: one.channelId, ...body }, t1);
    expect((await send({ name: 'all', to_all: true, message: { x: 1 } })).status).toBe(200);
    for (const r of [one.reader, two.reader]) {
      expect(await nextMessage(r)).toEqual({
        sender_user_id: 32,
        sender_channel_id: one.channelId,
        name: 'all',
        message: { x: 1 },
      });
    }
    expect((await graph.next()).data?.notify).toMatchObject({ name: 'all', senderUserId: '32' });

    await send({ name: 'users', to_users: [33, '34'] });
    expect(await nextMessage(two.reader)).toMatchObject({ name: 'users' });
    expect((await graph.next()).data?.notify).toMatchObject({ name: 'users' });

    await send({ name: 'channels', to_channels: [graphChannel, one.channelId] });
    expect(await nextMessage(one.reader)).toMatchObject({ name: 'channels' });
    expect((await graph.next()).data?.notify).toMatchObject({ name: 'channels' });

    // Two got 'users' and nothing after; one got no 'users'. A last message to all proves it.
    await send({ name: 'last', to_all: true });
    expect(await nextMessage(one.reader)).toMatchObject({ name: 'last' });
    expect(await nextMessage(two.reader)).toMatchObject({ name: 'last' });
  });

  it('carries applause of the OS3 meeting in notify streams while the level is above 0', async () => {
    const [t1, t2, t3] = (await Promise.all(['35', '36', '37'].map((u) => a.token(u)))) as [
      string,
      string,
      string,
    ];
    const one = await notify(a, t1);
    const two = await notify(b, t2);
    // GraphQL sees the same meeting: both OS3 streams count as present there.
    const watcher = sse(a, t3);
    const applause = watcher.subscribe(ApplauseDocument, { meetingId: OS3_MEETING });
    await nextMatching(applause, (r) => (r.data?.applause.presentUsers ?? 0) >= 3);

    expect(await post(a, '/applause', '', t1)).toMatchObject({ status: 200, text: '' });
    const get = await fetch(url(b, '/applause'), { headers: auth(t2) });
    expect(get.status).toBe(200);

    for (const r of [one.reader, two.reader]) {
      const line = (await nextMatching(
        r.lines,
        (l) => ((l as Line).message as { level?: number })?.level === 2,
      )) as Line;
      expect(line).toEqual({
        sender_user_id: 0,
        sender_channel_id: 'Server',
        name: 'applause',
        message: { level: 2, presentUsers: expect.any(Number) },
      });
      // Every interval while above 0 (only applause lines meanwhile), then once at 0.
      await nextMatching(r.lines, (l) => {
        expect(l).toMatchObject({ name: 'applause' });
        return ((l as Line).message as { level: number }).level === 0;
      });
    }
    // Nothing more at level 0: the next line is a marker sent afterwards.
    await post(b, '/notify/send', { channel_id: one.channelId, name: 'after', to_all: true }, t1);
    expect(await nextMessage(one.reader)).toMatchObject({ name: 'after' });
    expect(await nextMessage(two.reader)).toMatchObject({ name: 'after' });
  });
});
