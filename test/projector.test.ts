import type { ExecutionResult } from 'graphql';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  ProjectorDocument,
  type ProjectorSubscription,
  WriteDataDocument,
} from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { gql, type ResultQueue } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

type Update = ProjectorSubscription['projector'];
type Change = { key: string; value?: unknown; visibleTo?: string[] | null };

async function nextUpdate(queue: ResultQueue<ExecutionResult<ProjectorSubscription>>) {
  const result = await queue.next();
  expect(result.errors).toBeUndefined();
  return result.data?.projector as Update;
}

describe('projector across two instances on one Redis', () => {
  const { a, b, ws, sse } = useInstances({ ANONYMOUS_CONNECTIONS: '20' });
  let service: string;

  beforeAll(async () => {
    service = await a.token('connector', { service: true });
  });

  const write = async (changes: Change[]) => {
    const result = await gql(b.url, WriteDataDocument, { changes }, service);
    expect(result.body.errors).toBeUndefined();
    return result.body.data?.writeData as number;
  };
  const subscribe = (server: TestServer, token: string, ids: string[]) => {
    return ws(server, token).subscribe(ProjectorDocument, { ids });
  };

  it('renders existing projectors first, then only those whose output changed', async () => {
    const motion = { name: 'motions/motion', id: 1 };
    await write([
      { key: 'motions/motion:1', value: { id: 1, title: 'A' } },
      { key: 'core/projector:1', value: { elements: [motion, { name: 'nope/slide', id: 3 }] } },
      { key: 'core/projector:2', value: { elements: [] } },
    ]);
    const stream = subscribe(a, await a.token('viewer1'), ['1', '2', '99']);
    const first = await nextUpdate(stream);
    expect(first.data).toEqual({
      '1': [
        { element: motion, data: { id: 1, title: 'A' } },
        { error: 'unknwown slide nope/slide' },
      ],
      '2': [],
    });

    const changeId = await write([{ key: 'motions/motion:1', value: { id: 1, title: 'B' } }]);
    const second = await nextUpdate(stream);
    expect(second.changeId).toBeGreaterThanOrEqual(changeId);
    expect(second.data).toEqual({
      '1': [
        { element: motion, data: { id: 1, title: 'B' } },
        { error: 'unknwown slide nope/slide' },
      ],
    });

    // Unrelated data and an identical rewrite render nothing new; the marker comes next.
    await write([{ key: 'agenda/item:4', value: { id: 4 } }]);
    await write([{ key: 'motions/motion:1', value: { id: 1, title: 'B' } }]);
    await write([{ key: 'core/projector:2', value: { elements: [motion] } }]);
    expect((await nextUpdate(stream)).data).toEqual({
      '2': [{ element: motion, data: { id: 1, title: 'B' } }],
    });

    // A projector that appears later is sent when it does; one that goes away becomes [].
    await write([{ key: 'core/projector:99', value: { elements: [] } }]);
    expect((await nextUpdate(stream)).data).toEqual({ '99': [] });
    await write([{ key: 'core/projector:2', value: null }]);
    expect((await nextUpdate(stream)).data).toEqual({ '2': [] });

    // The first slide of kind "nope/slide" makes the error go away.
    await write([{ key: 'nope/slide:3', value: { id: 3 } }]);
    expect((await nextUpdate(stream)).data).toEqual({
      '1': [
        { element: motion, data: { id: 1, title: 'B' } },
        { element: { name: 'nope/slide', id: 3 }, data: { id: 3 } },
      ],
    });

    // Another subscriber on the other instance, over SSE, gets the current render first.
    const late = sse(b, await b.token('viewer2')).subscribe(ProjectorDocument, { ids: ['1'] });
    expect(Object.keys((await nextUpdate(late)).data as object)).toEqual(['1']);
  });

  it('renders data hidden by visibleTo as null for other users', async () => {
    const element = { name: 'secret/note', id: 5 };
    await write([
      { key: 'secret/note:5', value: { id: 5, text: 'private' }, visibleTo: ['owner'] },
      { key: 'core/projector:3', value: { elements: [element] } },
    ]);
    const owner = subscribe(a, await a.token('owner'), ['3']);
    const other = subscribe(b, await b.token('other'), ['3']);
    expect((await nextUpdate(owner)).data).toEqual({
      '3': [{ element, data: { id: 5, text: 'private' } }],
    });
    expect((await nextUpdate(other)).data).toEqual({ '3': [{ element, data: null }] });
  });

  it('refuses anonymous callers and bad ids', async () => {
    const anonymous = ws(a);
    const refused = await anonymous.subscribe(ProjectorDocument, { ids: ['1'] }).next();
    expect(refused.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');
    const token = await a.token('viewer3');
    for (const ids of [[], ['a b']]) {
      const bad = await subscribe(a, token, ids).next();
      expect(bad.errors?.[0]?.extensions?.['code']).toBe('BAD_USER_INPUT');
    }
  });
});
