import type { ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import { NotifyDocument, type NotifySubscription, PublishDocument } from './generated/graphql.ts';
import { gql, type ResultQueue, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { readJsonLines } from './support/json-lines.ts';

type NotifyQueue = ResultQueue<ExecutionResult<NotifySubscription>>;

async function channelOf(queue: NotifyQueue): Promise<string> {
  const event = (await queue.next()).data?.notify;
  if (event?.__typename !== 'NotifyChannel') throw new Error('expected NotifyChannel');
  return event.channelId;
}

async function metric(url: string, label: string): Promise<number> {
  const text = await (
    await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(WAIT_MS) })
  ).text();
  const line = text
    .split('\n')
    .find((l) => l.startsWith('switchboard_limit_rejections_total{') && l.includes(`"${label}"`));
  return line ? Number(line.split(' ').pop()) : 0;
}

const users = (count: number) => Array.from({ length: count }, (_, i) => `target-${i}`);

describe('notify publish caps (defaults)', () => {
  const { a, b, ws, onCleanup } = useInstances({ RATE_LIMIT_PUBLISH: 'off' });

  it('refuses more than NOTIFY_MAX_TARGETS users or channels and a name past NOTIFY_MAX_NAME_LENGTH', async () => {
    const [senderToken, receiverToken] = await Promise.all([a.token('cap-s'), a.token('target-7')]);
    const channelId = await channelOf(ws(a, senderToken).subscribe(NotifyDocument, {}));
    const receiver = ws(b, receiverToken).subscribe(NotifyDocument, {});
    await channelOf(receiver);
    const publish = (input: Record<string, unknown>) =>
      gql(
        b.url,
        PublishDocument,
        { input: { channelId, name: 'n', ...input } } as never,
        senderToken,
      );
    const codeOf = (r: Awaited<ReturnType<typeof publish>>) =>
      r.body.errors?.[0]?.extensions?.['code'];

    const targetsBefore = await metric(b.url, 'notifyTargets');
    const nameBefore = await metric(b.url, 'notifyNameLength');
    expect(codeOf(await publish({ toUsers: users(1001) }))).toBe('BAD_USER_INPUT');
    expect(codeOf(await publish({ toChannels: users(1001) }))).toBe('BAD_USER_INPUT');
    expect(codeOf(await publish({ toUsers: ['x'], name: 'n'.repeat(257) }))).toBe('BAD_USER_INPUT');
    expect(await metric(b.url, 'notifyTargets')).toBe(targetsBefore + 2);
    expect(await metric(b.url, 'notifyNameLength')).toBe(nameBefore + 1);

    // At the caps everything goes through, once per target even when repeated.
    const ok = await publish({
      toUsers: [...users(999), 'target-7'],
      name: 'm'.repeat(256),
      message: 1,
    });
    expect(ok.body.errors).toBeUndefined();
    const delivered = (await receiver.next()).data?.notify;
    expect(delivered).toMatchObject({ __typename: 'NotifyMessage', message: 1 });
  });

  it('answers the ICC shim with 400 beyond the caps', async () => {
    const token = await a.token('cap-icc');
    const stream = await readJsonLines(`${a.url}/system/icc/notify`, {
      authorization: `Bearer ${token}`,
    });
    onCleanup(() => stream.close());
    const { channel_id } = (await stream.lines.next()) as { channel_id: string };
    for (const body of [
      { channel_id, name: 'n', to_users: users(1001).map((_, i) => i + 1) },
      { channel_id, name: 'x'.repeat(900_000), to_users: [1] },
    ]) {
      const response = await fetch(`${a.url}/system/icc/notify/publish`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(WAIT_MS),
      });
      expect(response.status).toBe(400);
      expect(await response.json()).toMatchObject({ error: 'invalid' });
    }
  });
});
