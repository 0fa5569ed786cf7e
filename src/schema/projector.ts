import type { ProjectorUpdate } from '../domain/projector.ts';
import { builder } from './builder.ts';

const ProjectorUpdateRef = builder.objectRef<ProjectorUpdate>('ProjectorUpdate').implement({
  fields: (t) => ({
    changeId: t.exposeInt('changeId'),
    data: t.expose('data', {
      type: 'JSON',
      description: '{"<projectorId>": [{"element": {...}, "data": {...}}]}',
    }),
  }),
});

builder.subscriptionField('projector', (t) =>
  t.field({
    type: ProjectorUpdateRef,
    description: 'Rendered projectors: first all requested that exist, then each one that changes.',
    args: { ids: t.arg.idList({ required: true }) },
    subscribe: (_root, { ids }, ctx) =>
      ctx.services.projector.subscribe(ctx.viewer, ids.map(String), ctx.connection),
    resolve: (update) => update,
  }),
);
