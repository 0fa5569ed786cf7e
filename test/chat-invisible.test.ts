import { randomBytes } from 'node:crypto';
import type { ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import {
  ChatDocument,
  type ChatSubscription,
  ConnectionsDocument,
  UpsertUserDocument,
} from './generated/graphql.ts';
import { gql, pingAccepted, type ResultQueue } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

type ChatQueue = ResultQueue<ExecutionResult<ChatSubscription>>;

const unique = (name: string) => `${name}-${randomBytes(4).toString('hex')}`;

/** The next ConnectionState of `userId`, skipping everything else (bounded). */
async function nextStateOf(queue: ChatQueue, userId: string) {
  for (let i = 0; i < 50; i++) {
    const result = await queue.next();
    expect(result.errors).toBeUndefined();
    const event = result.data?.chat;
    if (event?.__typename === 'ConnectionState' && event.userId === userId) return event.active;
  }
  throw new Error('no ConnectionState');
}

describe('INVISIBLE users in chat presence, across two instances', () => {
  const { a, b, ws } = useInstances({ PING_MIN_INTERVAL_MS: '1' });

  it('are shown inactive in connections and ConnectionState while invisible', async () => {
    const group = unique('g');
    const [watcher, hider] = [unique('w'), unique('h')];
    const service = await a.token(unique('svc'), { service: true });
    for (const userId of [watcher, hider]) {
      await gql(a.url, UpsertUserDocument, { input: { userId, group } }, service);
    }
    const [tw, th] = await Promise.all([a.token(watcher, { group }), b.token(hider, { group })]);
    const activeOf = async (userId: string) => {
      const r = await gql(a.url, ConnectionsDocument, {}, tw);
      return r.body.data?.connections.find((c) => c.userId === userId)?.active;
    };
    const ping = (status: 'ACTIVE' | 'INVISIBLE') => pingAccepted(b.url, status, th);

    const states = ws(a, tw).subscribe(ChatDocument, {});
    // The watcher's own stream is live once the hider's connection shows up in it.
    ws(b, th).subscribe(ChatDocument, {});
    expect(await nextStateOf(states, hider)).toBe(true);
    expect(await activeOf(hider)).toBe(true);

    // Going invisible while connected: inactive for everybody else, on every instance.
    await ping('INVISIBLE');
    expect(await nextStateOf(states, hider)).toBe(false);
    expect(await activeOf(hider)).toBe(false);

    // A second connection while invisible does not show the user either; a visible ping does.
    ws(a, th).subscribe(ChatDocument, {});
    await ping('ACTIVE');
    expect(await nextStateOf(states, hider)).toBe(true);
    expect(await activeOf(hider)).toBe(true);
  });
});
