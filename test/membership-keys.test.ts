import { randomBytes } from 'node:crypto';
import type { ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import { ApplauseDocument, type ApplauseSubscription } from './generated/graphql.ts';
import { nextMatching, type ResultQueue } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

type ApplauseQueue = ResultQueue<ExecutionResult<ApplauseSubscription>>;

const presentUsers = (queue: ApplauseQueue, predicate: (present: number) => boolean) =>
  nextMatching(queue, (result) => {
    expect(result.errors).toBeUndefined();
    const state = result.data?.applause;
    return state !== undefined && predicate(state.presentUsers);
  }).then((result) => result.data?.applause?.presentUsers);

describe('membership keys in Redis with ids that contain ":"', () => {
  const { a, b, ws } = useInstances({ APPLAUSE_INTERVAL_MS: '100' });

  it('never count an instance id or another meeting’s user as present', async () => {
    const meeting = `c${randomBytes(4).toString('hex')}`;
    const [x, w, watcher] = await Promise.all(['x', 'w', 'watcher'].map((u) => a.token(u)));

    // x present in `meeting` on A: A's instance id is held for (meeting, x).
    const inMeeting = ws(a, x).subscribe(ApplauseDocument, { meetingId: meeting });
    expect(await presentUsers(inMeeting, (n) => n >= 1)).toBe(1);

    // Meeting `<meeting>:x` is another meeting: only its own subscribers are present there.
    const other = `${meeting}:x`;
    const wOnB = ws(b, w).subscribe(ApplauseDocument, { meetingId: other });
    expect(await presentUsers(wOnB, (n) => n >= 1)).toBe(1);
    const watching = ws(a, watcher).subscribe(ApplauseDocument, { meetingId: other });
    expect(await presentUsers(watching, (n) => n >= 2)).toBe(2);
  });

  it('keep a user "a:b" of one meeting apart from user "b" of meeting "…:a"', async () => {
    const meeting = `c${randomBytes(4).toString('hex')}`;
    const [ab, bee, watcher] = await Promise.all(['a:b', 'b', 'watcher'].map((u) => a.token(u)));
    const watching = ws(b, watcher).subscribe(ApplauseDocument, { meetingId: meeting });
    expect(await presentUsers(watching, (n) => n >= 1)).toBe(1);
    const colon = ws(a, ab).subscribe(ApplauseDocument, { meetingId: meeting });
    expect(await presentUsers(watching, (n) => n >= 2)).toBe(2);

    // User b stays in meeting `<meeting>:a` on the other instance.
    const other = `${meeting}:a`;
    const elsewhere = ws(b, bee).subscribe(ApplauseDocument, { meetingId: other });
    expect(await presentUsers(elsewhere, (n) => n >= 1)).toBe(1);

    // a:b leaves: the meeting is down to its watcher at once, whatever b does elsewhere.
    colon.close();
    expect(await presentUsers(watching, (n) => n !== 2)).toBe(1);
  });
});
