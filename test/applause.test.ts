import { randomBytes } from 'node:crypto';
import type { ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import {
  ApplauseDocument,
  type ApplauseSubscription,
  ConfigureMeetingDocument,
  NotifyDocument,
  PublishDocument,
  SendApplauseDocument,
} from './generated/graphql.ts';
import { gql, nextMatching, type ResultQueue } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

type ApplauseQueue = ResultQueue<ExecutionResult<ApplauseSubscription>>;

const uniqueMeeting = () => `m${randomBytes(4).toString('hex')}`;

/** Reads applause events until one matches; fails on an error result. */
function untilApplause(
  queue: ApplauseQueue,
  predicate: (state: { level: number; presentUsers: number }) => boolean,
) {
  return nextMatching(queue, (result) => {
    expect(result.errors).toBeUndefined();
    const state = result.data?.applause;
    return state !== undefined && predicate(state);
  });
}

describe('applause and meetings across two instances on one Redis', () => {
  const { a, b, ws, sse } = useInstances({
    APPLAUSE_INTERVAL_MS: '100',
    APPLAUSE_WINDOW_S: '3',
    ANONYMOUS_CONNECTIONS: '20',
  });

  const codeOf = (r: { body: ExecutionResult<unknown> }) =>
    r.body.errors?.[0]?.extensions?.['code'];

  it('gives level 10 for ten users over both instances on every subscriber, then 0', async () => {
    const meetingId = uniqueMeeting();
    const [w1, w2] = await Promise.all([a.token('a-w1'), b.token('a-w2')]);
    const overWs = ws(a, w1).subscribe(ApplauseDocument, { meetingId });
    const overSse = sse(b, w2 as string).subscribe(ApplauseDocument, { meetingId });
    for (const q of [overWs, overSse]) {
      const first = await q.next();
      expect(first.data?.applause).toMatchObject({ meetingId, level: 0 });
    }

    const users = Array.from({ length: 10 }, (_, i) => `a-clap-${i}`);
    const tokens = await Promise.all(users.map((u) => a.token(u)));
    const results = await Promise.all([
      ...tokens.map((t, i) => gql(i % 2 ? b.url : a.url, SendApplauseDocument, { meetingId }, t)),
      // Sending again within the window counts once.
      gql(b.url, SendApplauseDocument, { meetingId }, tokens[0]),
    ]);
    for (const r of results) expect(r.body).toEqual({ data: { sendApplause: true } });

    for (const q of [overWs, overSse]) {
      const top = await untilApplause(q, (s) => s.level >= 10);
      expect(top.data?.applause?.level).toBe(10);
    }
    // After the window the level falls back to 0 everywhere.
    for (const q of [overWs, overSse]) await untilApplause(q, (s) => s.level === 0);
  });

  it('counts present users of notify and applause subscriptions on both instances', async () => {
    const meetingId = uniqueMeeting();
    const [tw, t1, t2] = await Promise.all(['p-watch', 'p-one', 'p-two'].map((u) => a.token(u)));
    const watcher = ws(a, tw).subscribe(ApplauseDocument, { meetingId });
    expect((await watcher.next()).data?.applause).toEqual({
      meetingId,
      level: 0,
      presentUsers: 1,
    });

    const oneOnB = ws(b, t1).subscribe(ApplauseDocument, { meetingId });
    await untilApplause(watcher, (s) => s.presentUsers === 2);
    // The same user on the other instance too: still one present user.
    const oneOnA = sse(a, t1 as string).subscribe(NotifyDocument, { meetingId });
    await oneOnA.next();
    const twoOnB = sse(b, t2 as string).subscribe(NotifyDocument, { meetingId });
    await twoOnB.next();
    const three = await untilApplause(watcher, (s) => s.presentUsers !== 2);
    expect(three.data?.applause?.presentUsers).toBe(3);

    twoOnB.close();
    await untilApplause(watcher, (s) => s.presentUsers === 2);
    oneOnB.close();
    oneOnA.close();
    await untilApplause(watcher, (s) => s.presentUsers === 1);
  });

  it('lets only service callers configure meetings, with defaults and partial updates', async () => {
    const id = uniqueMeeting();
    const [service, user] = await Promise.all([
      a.token('svc', { service: true }),
      a.token('c-user'),
    ]);
    const configure = (input: Record<string, unknown>, token?: string) =>
      gql(b.url, ConfigureMeetingDocument, { input: { id, ...input } } as never, token);

    expect(codeOf(await configure({}, user))).toBe('FORBIDDEN');
    expect(codeOf(await configure({}))).toBe('UNAUTHENTICATED');
    expect(codeOf(await configure({ id: ' ' }, service))).toBe('BAD_USER_INPUT');

    expect((await configure({}, service)).body.data?.configureMeeting).toEqual({
      id,
      applauseEnabled: true,
      memberIds: null,
    });
    expect(
      (await configure({ memberIds: ['x', 'y', 'x'] }, service)).body.data?.configureMeeting,
    ).toEqual({ id, applauseEnabled: true, memberIds: ['x', 'y'] });
    expect(
      (await configure({ applauseEnabled: false }, service)).body.data?.configureMeeting,
    ).toEqual({ id, applauseEnabled: false, memberIds: ['x', 'y'] });
    expect((await configure({ memberIds: null }, service)).body.data?.configureMeeting).toEqual({
      id,
      applauseEnabled: false,
      memberIds: null,
    });
  });

  it('refuses applause where it is disabled and non-members where there are members', async () => {
    const disabled = uniqueMeeting();
    const closed = uniqueMeeting();
    const [service, member, outsider] = await Promise.all([
      a.token('svc', { service: true }),
      a.token('r-member'),
      a.token('r-outsider'),
    ]);
    await gql(
      a.url,
      ConfigureMeetingDocument,
      { input: { id: disabled, applauseEnabled: false } },
      service,
    );
    await gql(
      a.url,
      ConfigureMeetingDocument,
      { input: { id: closed, memberIds: ['r-member'] } },
      service,
    );

    // Configured on A, enforced on B (Postgres is shared).
    const send = (meetingId: string, token?: string) =>
      gql(b.url, SendApplauseDocument, { meetingId }, token);
    expect(codeOf(await send(disabled, member))).toBe('FORBIDDEN');
    expect(codeOf(await send(closed, outsider))).toBe('FORBIDDEN');
    expect(codeOf(await send(closed))).toBe('UNAUTHENTICATED');
    expect(codeOf(await send(uniqueMeeting()))).toBe('UNAUTHENTICATED');
    expect((await send(closed, member)).body.data?.sendApplause).toBe(true);
    // An unknown meeting is open with applause enabled.
    expect((await send(uniqueMeeting(), outsider)).body.data?.sendApplause).toBe(true);

    const refusedApplause = await ws(b, outsider)
      .subscribe(ApplauseDocument, { meetingId: closed })
      .next();
    expect(refusedApplause.errors?.[0]?.extensions?.['code']).toBe('FORBIDDEN');
    const refusedAnonymous = await ws(b).subscribe(ApplauseDocument, { meetingId: closed }).next();
    expect(refusedAnonymous.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');
    const refusedNotify = await ws(b, outsider)
      .subscribe(NotifyDocument, { meetingId: closed })
      .next();
    expect(refusedNotify.errors?.[0]?.extensions?.['code']).toBe('FORBIDDEN');

    // The member gets in; the outsider cannot send into the meeting, the member can.
    const memberStream = ws(a, member).subscribe(NotifyDocument, { meetingId: closed });
    const first = await memberStream.next();
    const channelId =
      first.data?.notify.__typename === 'NotifyChannel' ? first.data.notify.channelId : '';
    const outsiderStream = ws(a, outsider).subscribe(NotifyDocument, {});
    const outsiderFirst = await outsiderStream.next();
    const outsiderChannel =
      outsiderFirst.data?.notify.__typename === 'NotifyChannel'
        ? outsiderFirst.data.notify.channelId
        : '';
    const intruder = await gql(
      b.url,
      PublishDocument,
      { input: { channelId: outsiderChannel, name: 'x', toMeeting: closed } },
      outsider,
    );
    expect(codeOf(intruder)).toBe('FORBIDDEN');
    const ok = await gql(
      b.url,
      PublishDocument,
      { input: { channelId, name: 'inside', toMeeting: closed } },
      member,
    );
    expect(ok.body.data?.publish).toBe(true);
    const received = await memberStream.next();
    expect(received.data?.notify).toMatchObject({ name: 'inside' });
    // Anonymous viewers may watch the applause of an open meeting; they are not counted.
    const open = ws(b).subscribe(ApplauseDocument, { meetingId: disabled });
    expect((await open.next()).data?.applause).toEqual({
      meetingId: disabled,
      level: 0,
      presentUsers: 0,
    });
  });
});
