import type { ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import {
  AutoupdateDocument,
  type AutoupdateSubscription,
  WriteDataDocument,
} from './generated/graphql.ts';
import { gql } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

const SUBSCRIBERS = 600;
const PER_SOCKET = 50;
const KEYS = 400;
const WRITES = 20;

describe('a reconnect storm of autoupdate subscriptions (default pool of 10)', () => {
  const { a, b, ws } = useInstances({ RATE_LIMIT_PUBLISH: 'off' });

  it('gives all 600 their first batch while connectors keep writing', async () => {
    const service = await b.token('storm-connector', { service: true });
    const seed = Array.from({ length: KEYS }, (_, i) => ({
      key: `storm/item:${i}`,
      value: { id: i, title: `item ${i}`, text: 'x'.repeat(40) },
    }));
    const seeded = await gql(b.url, WriteDataDocument, { changes: seed }, service);
    expect(seeded.body.errors).toBeUndefined();

    const sockets = SUBSCRIBERS / PER_SOCKET;
    const tokens = await Promise.all(
      Array.from({ length: sockets }, (_, i) => a.token(`storm-user-${i}`)),
    );
    const firsts: Promise<ExecutionResult<AutoupdateSubscription>>[] = [];
    for (const token of tokens) {
      const client = ws(a, token, false);
      for (let i = 0; i < PER_SOCKET; i++) {
        const queue = client.subscribe(AutoupdateDocument, { changeId: 0 });
        firsts.push(queue.next(60_000));
      }
    }
    // Connectors write during the storm, to the storming instance and the other one.
    const writes = Array.from({ length: WRITES }, (_, i) =>
      gql(
        i % 2 ? a.url : b.url,
        WriteDataDocument,
        { changes: [{ key: `storm/write:${i}`, value: { i } }] },
        service,
      ),
    );

    const results = await Promise.all(firsts);
    const failed = results.filter((r) => r.errors !== undefined || !r.data);
    expect(failed.map((r) => r.errors?.[0]?.extensions?.['code'])).toEqual([]);
    for (const result of results) {
      const batch = result.data?.autoupdate;
      expect(batch?.allData).toBe(true);
      const changed = (batch?.changed ?? {}) as Record<string, unknown[]>;
      expect(changed['storm/item']?.length).toBe(KEYS);
    }
    for (const write of await Promise.all(writes)) expect(write.body.errors).toBeUndefined();
  }, 120_000);
});

describe('an autoupdate subscription that cannot get a read in time', () => {
  const { a, ws } = useInstances(
    { AUTOUPDATE_SETUP_CONCURRENCY: '1', AUTOUPDATE_SETUP_TIMEOUT_MS: '1' },
    1,
    { redis: false },
  );

  it('is refused with UNAVAILABLE and a retry hint, never INTERNAL_SERVER_ERROR', async () => {
    const token = await a.token('busy-user');
    const client = ws(a, token, false);
    const firsts = Array.from({ length: 40 }, () =>
      client.subscribe(AutoupdateDocument, { changeId: 0 }).next(),
    );
    const results = await Promise.all(firsts);
    const refused = results.filter((r) => r.errors !== undefined);
    expect(refused.length).toBeGreaterThan(0);
    for (const result of refused) {
      expect(result.errors?.[0]?.extensions).toMatchObject({
        code: 'UNAVAILABLE',
        retryAfterMs: expect.any(Number),
      });
    }
    for (const result of results.filter((r) => r.errors === undefined)) {
      expect(result.data?.autoupdate.allData).toBe(true);
    }
    const metrics = await (await fetch(`${a.url}/metrics`)).text();
    expect(metrics).toContain(
      `switchboard_limit_rejections_total{limit="autoupdateSetupWait"} ${refused.length}`,
    );
  });
});
