import { beforeAll, describe, expect, it } from 'vitest';
import { WriteDataDocument } from './generated/graphql.ts';
import { gql } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { readJsonLines } from './support/json-lines.ts';

describe('OS3 autoupdate and projector endpoints across two instances', () => {
  const { a, b, onCleanup } = useInstances();
  let service: string;
  let user: string;

  beforeAll(async () => {
    service = await a.token('connector', { service: true });
    user = await a.token('7');
  });

  const write = async (changes: { key: string; value: unknown }[]) => {
    const result = await gql(b.url, WriteDataDocument, { changes }, service);
    expect(result.body.errors).toBeUndefined();
    return result.body.data?.writeData as number;
  };
  const open = async (url: string, token: string | null = user) => {
    const reader = await readJsonLines(url, token ? { authorization: `Bearer ${token}` } : {});
    onCleanup(() => reader.close());
    return reader;
  };

  it('streams {"connected":true}, a snapshot and then change lines; resumes with change_id', async () => {
    const first = await write([{ key: 'motions/motion:1', value: { id: 1, title: 'A' } }]);
    const stream = await open(`${a.url}/system/autoupdate`);
    expect(stream.status).toBe(200);
    expect(await stream.lines.next()).toEqual({ connected: true });
    expect(await stream.lines.next()).toEqual({
      changed: { 'motions/motion': [{ id: 1, title: 'A' }] },
      deleted: {},
      from_change_id: 0,
      to_change_id: first,
      all_data: true,
    });
    const second = await write([
      { key: 'motions/motion:1', value: null },
      { key: 'motions/motion:2', value: { id: 2, title: 'B' } },
    ]);
    expect(await stream.lines.next()).toEqual({
      changed: { 'motions/motion': [{ id: 2, title: 'B' }] },
      deleted: { 'motions/motion': [1] },
      from_change_id: first,
      to_change_id: second,
      all_data: false,
    });

    const resumed = await open(`${b.url}/system/autoupdate?change_id=${first}`);
    expect(await resumed.lines.next()).toEqual({ connected: true });
    expect(await resumed.lines.next()).toMatchObject({
      deleted: { 'motions/motion': [1] },
      from_change_id: first,
      to_change_id: second,
      all_data: false,
    });
  });

  it('streams projector lines', async () => {
    await write([
      { key: 'topics/topic:3', value: { id: 3, title: 'T' } },
      { key: 'core/projector:1', value: { elements: [{ name: 'topics/topic', id: 3 }] } },
    ]);
    const stream = await open(`${a.url}/system/projector?projector_ids=1,2`);
    const first = (await stream.lines.next()) as { change_id: number; data: unknown };
    expect(first.data).toEqual({
      '1': [{ element: { name: 'topics/topic', id: 3 }, data: { id: 3, title: 'T' } }],
    });
    const changeId = await write([{ key: 'topics/topic:3', value: { id: 3, title: 'U' } }]);
    expect(await stream.lines.next()).toEqual({
      change_id: changeId,
      data: { '1': [{ element: { name: 'topics/topic', id: 3 }, data: { id: 3, title: 'U' } }] },
    });
  });

  it('answers bad parameters and anonymous callers with OS3 errors', async () => {
    for (const path of [
      'autoupdate?change_id=abc',
      'autoupdate?change_id=-1',
      'projector?projector_ids=1,x',
      'projector',
    ]) {
      const reader = await open(`${a.url}/system/${path}`);
      expect(reader.status).toBe(400);
      expect(reader.body).toMatchObject({ error: { type: 'invalid_request' } });
    }
    const anonymous = await open(`${a.url}/system/autoupdate`, null);
    expect(anonymous.status).toBe(400);
    expect(anonymous.body).toMatchObject({ error: { type: 'auth_required' } });
  });
});
