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
  const open = async (url: string, token: string | null = user, method = 'GET') => {
    const auth = token ? { authorization: `Bearer ${token}` } : {};
    const reader = await readJsonLines(url, auth, method);
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

  // OS3 internal/http/http.go: `if len(data) == 0 { changeID = newChangeID; continue }`, so a
  // client resuming at the current change id sees nothing until the next change.
  it('writes nothing after {"connected":true} when resuming at the current change id (as OS3)', async () => {
    const current = await write([{ key: 'motions/motion:5', value: { id: 5, title: 'now' } }]);
    const stream = await open(`${b.url}/system/autoupdate?change_id=${current}`);
    expect(await stream.lines.next()).toEqual({ connected: true });
    const next = await write([{ key: 'motions/motion:5', value: { id: 5, title: 'later' } }]);
    // The first line after connected is the new change, chained from the resumed change id.
    expect(await stream.lines.next()).toEqual({
      changed: { 'motions/motion': [{ id: 5, title: 'later' }] },
      deleted: {},
      from_change_id: current,
      to_change_id: next,
      all_data: false,
    });
  });

  // OS3 internal/http/http.go wraps both streams in getOrPOSTMiddleware: GET or POST.
  it('serves the autoupdate and projector streams to POST as to GET (OS3 getOrPOSTMiddleware)', async () => {
    const autoupdate = await open(`${a.url}/system/autoupdate`, user, 'POST');
    expect(autoupdate.status).toBe(200);
    expect(await autoupdate.lines.next()).toEqual({ connected: true });
    expect(await autoupdate.lines.next()).toMatchObject({ all_data: true });
    const projector = await open(`${a.url}/system/projector?projector_ids=9`, user, 'POST');
    expect(projector.status).toBe(200);
    expect(await projector.lines.next()).toEqual({ connected: true });
    const put = await fetch(`${a.url}/system/autoupdate`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${user}` },
    });
    expect(put.status).toBe(400);
    expect(await put.json()).toEqual({
      error: { type: 'invalid_request', msg: 'Only GET or POST requests are supported' },
    });
  });

  // OS3 internal/http/http.go, Projector: Content-Type application/json, then
  // `{"connected":true}` before the first `{"change_id","data"}` line.
  it('streams projector lines after {"connected":true}, as application/json (as OS3)', async () => {
    await write([
      { key: 'topics/topic:3', value: { id: 3, title: 'T' } },
      { key: 'core/projector:1', value: { elements: [{ name: 'topics/topic', id: 3 }] } },
    ]);
    const stream = await open(`${a.url}/system/projector?projector_ids=1,2`);
    expect(stream.contentType).toBe('application/json');
    expect(await stream.lines.next()).toEqual({ connected: true });
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
