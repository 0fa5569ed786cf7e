import type { ExecutionResult } from 'graphql';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  AutoupdateDocument,
  type AutoupdateSubscription,
  ProjectorDocument,
  type ProjectorSubscription,
  WriteDataDocument,
} from './generated/graphql.ts';
import { gql, type ResultQueue } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { readJsonLines } from './support/json-lines.ts';

type Batch = AutoupdateSubscription['autoupdate'];

/** Names an object literal, a lookup or a Record would resolve through Object.prototype. */
const NAMES = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf'];

async function nextBatch(queue: ResultQueue<ExecutionResult<AutoupdateSubscription>>) {
  const result = await queue.next();
  expect(result.errors).toBeUndefined();
  return result.data?.autoupdate as Batch;
}

/** The own entry `name` of a parsed JSON object (never one inherited from its prototype). */
function own(record: unknown, name: string): unknown {
  const object = record as Record<string, unknown>;
  return Object.hasOwn(object, name) ? object[name] : undefined;
}

describe('collections and ids named like Object.prototype members', () => {
  const { a, b, ws, onCleanup } = useInstances();
  let service: string;
  let user: string;

  beforeAll(async () => {
    service = await a.token('connector', { service: true });
    user = await a.token('proto-user');
  });

  const write = async (changes: { key: string; value: unknown }[]) => {
    const result = await gql(b.url, WriteDataDocument, { changes }, service);
    expect(result.body.errors).toBeUndefined();
    return result.body.data?.writeData as number;
  };

  it('are ordinary names in the snapshot, in live batches and in the OS3 stream', async () => {
    const first = await write(
      NAMES.map((name, i) => ({ key: `${name}:${name}`, value: { id: i, name } })),
    );

    const live = ws(a, user).subscribe(AutoupdateDocument, { changeId: 0 });
    const snapshot = await nextBatch(live);
    expect(snapshot.allData).toBe(true);
    expect(snapshot.toChangeId).toBeGreaterThanOrEqual(first);
    for (const [i, name] of NAMES.entries()) {
      expect(own(snapshot.changed, name)).toEqual([{ id: i, name }]);
    }

    // One call: a prototype name and an ordinary one; both arrive, chained to the snapshot.
    const second = await write([
      { key: '__proto__:x', value: { id: 'x' } },
      { key: 'topics/topic:1', value: { id: 1 } },
      { key: 'constructor:constructor', value: null },
    ]);
    const batch = await nextBatch(live);
    expect(batch.fromChangeId).toBe(snapshot.toChangeId);
    expect(batch.toChangeId).toBe(second);
    expect(own(batch.changed, '__proto__')).toEqual([{ id: 'x' }]);
    expect(own(batch.changed, 'topics/topic')).toEqual([{ id: 1 }]);
    expect(own(batch.deleted, 'constructor')).toEqual(['constructor']);

    // A resume over the same range reads the same from Postgres.
    const resumed = ws(b, user).subscribe(AutoupdateDocument, { changeId: snapshot.toChangeId });
    const replay = await nextBatch(resumed);
    expect(replay).toMatchObject({ fromChangeId: snapshot.toChangeId, toChangeId: second });
    expect(own(replay.changed, '__proto__')).toEqual([{ id: 'x' }]);
    expect(own(replay.deleted, 'constructor')).toEqual(['constructor']);

    const os3 = await readJsonLines(`${a.url}/system/autoupdate`, {
      authorization: `Bearer ${user}`,
    });
    onCleanup(() => os3.close());
    expect(os3.status).toBe(200);
    expect(await os3.lines.next()).toEqual({ connected: true });
    const line = (await os3.lines.next()) as { changed: unknown; all_data: boolean };
    expect(line.all_data).toBe(true);
    expect(own(line.changed, 'toString')).toEqual([{ id: 2, name: 'toString' }]);
    expect(own(line.changed, '__proto__')).toEqual([{ id: 1, name: '__proto__' }, { id: 'x' }]);
  });

  it('render projectors with such ids', async () => {
    await write([
      { key: 'hasOwnProperty:1', value: { id: 1, title: 'T' } },
      { key: 'core/projector:__proto__', value: { elements: [{ name: 'hasOwnProperty', id: 1 }] } },
    ]);
    const stream = ws(a, user).subscribe(ProjectorDocument, { ids: ['__proto__', 'constructor'] });
    const result = (await stream.next()) as ExecutionResult<ProjectorSubscription>;
    expect(result.errors).toBeUndefined();
    const data = result.data?.projector.data;
    expect(own(data, '__proto__')).toEqual([
      { element: { name: 'hasOwnProperty', id: 1 }, data: { id: 1, title: 'T' } },
    ]);
    expect(own(data, 'constructor')).toBeUndefined();
  });
});
