import type { AutoupdateBatch, AutoupdateEvent } from '../domain/autoupdate.ts';
import type { ChangeRange } from '../domain/events.ts';
import { builder } from './builder.ts';

const EventRef = builder.objectRef<AutoupdateEvent>('Event').implement({
  description: 'An event pushed for a recipient (notifier model).',
  fields: (t) => ({
    changeId: t.exposeInt('changeId'),
    accessId: t.exposeID('accessId'),
    createdAt: t.exposeFloat('createdAt'),
    payload: t.expose('payload', { type: 'JSON' }),
  }),
});

const AutoupdateBatchRef = builder.objectRef<AutoupdateBatch>('AutoupdateBatch').implement({
  description:
    'What changed for the viewer in (fromChangeId, toChangeId]. Batches chain: fromChangeId is the previous toChangeId.',
  fields: (t) => ({
    fromChangeId: t.exposeInt('fromChangeId', {
      description:
        'The change id this batch continues from (exclusive): the changeId asked for, 0 for allData, then the previous toChangeId.',
    }),
    toChangeId: t.exposeInt('toChangeId', {
      description: 'Pass this back as changeId to resume without gaps.',
    }),
    allData: t.exposeBoolean('allData', {
      description: 'A full snapshot: replace everything held (changeId 0, unknown or pruned).',
    }),
    changed: t.expose('changed', {
      type: 'JSON',
      description: '{"collection": [element, ...]} with the current values of changed keys.',
    }),
    deleted: t.expose('deleted', {
      type: 'JSON',
      description: '{"collection": [id, ...]}: deleted, or no longer visible to the viewer.',
    }),
    events: t.field({
      type: [EventRef],
      description: 'Events pushed for the viewer in this range, in change order.',
      resolve: (batch) => batch.events,
    }),
  }),
});

const PushEventsResultRef = builder.objectRef<ChangeRange & { accepted: number }>(
  'PushEventsResult',
);
PushEventsResultRef.implement({
  fields: (t) => ({
    accepted: t.exposeInt('accepted'),
    toChangeId: t.exposeInt('toChangeId'),
  }),
});

const DataChangeInput = builder.inputType('DataChangeInput', {
  fields: (t) => ({
    key: t.string({ required: true, description: 'collection:id, e.g. motions/motion:5' }),
    value: t.field({ type: 'JSON', description: 'null deletes the element' }),
    visibleTo: t.idList({ description: 'When set, only these users see the element.' }),
  }),
});

const EventInput = builder.inputType('EventInput', {
  fields: (t) => ({
    accessId: t.id({ required: true }),
    createdAt: t.float({
      description:
        "The connector's own timestamp (an opaque number); defaults to now in milliseconds.",
    }),
    payload: t.field({ type: 'JSON', required: true }),
  }),
});

builder.mutationField('writeData', (t) =>
  t.int({
    description:
      'Write keyed data for autoupdate; returns the new change id. Service callers only. All or nothing: one bad item rejects the call (BAD_USER_INPUT) and writes nothing.',
    args: { changes: t.arg({ type: [DataChangeInput], required: true }) },
    resolve: async (_root, { changes }, ctx) => {
      const range = await ctx.services.changeLog.writeData(
        ctx.viewer,
        changes.map((c) => ({
          key: c.key,
          value: c.value ?? null,
          visibleTo: c.visibleTo ? c.visibleTo.map(String) : null,
        })),
      );
      return range.toChangeId;
    },
  }),
);

builder.mutationField('pushEvents', (t) =>
  t.field({
    type: PushEventsResultRef,
    description:
      'Append events for recipients (notifier connectors). Service callers only. All or nothing.',
    args: { events: t.arg({ type: [EventInput], required: true }) },
    resolve: async (_root, { events }, ctx) => {
      const now = Date.now();
      const range = await ctx.services.changeLog.pushEvents(
        ctx.viewer,
        events.map((e) => ({
          accessId: String(e.accessId),
          createdAt: e.createdAt ?? now,
          payload: e.payload,
        })),
      );
      return { ...range, accepted: events.length };
    },
  }),
);

builder.subscriptionField('autoupdate', (t) =>
  t.field({
    type: AutoupdateBatchRef,
    description:
      'Everything that changed for the viewer after changeId (or since a createdAt), then live batches. changeId 0 or omitted: an allData snapshot first.',
    args: {
      changeId: t.arg.int(),
      since: t.arg.float({
        description: 'Only events with createdAt >= since (inclusive), replayed and live.',
      }),
    },
    subscribe: (_root, { changeId, since }, ctx) =>
      ctx.services.autoupdate.subscribe(ctx.viewer, { changeId, since }, ctx.connection),
    resolve: (batch) => batch,
  }),
);
