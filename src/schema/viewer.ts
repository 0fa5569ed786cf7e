import type { Viewer } from '../auth/index.ts';
import { builder } from './builder.ts';

const ViewerRef = builder.objectRef<Viewer>('Viewer').implement({
  fields: (t) => ({
    userId: t.exposeID('userId'),
    group: t.exposeString('group', { nullable: true }),
    isService: t.exposeBoolean('isService'),
  }),
});

builder.queryField('viewer', (t) =>
  t.field({
    type: ViewerRef,
    nullable: true,
    description: 'The caller as the server identified it; null when anonymous.',
    resolve: (_root, _args, ctx) => ctx.viewer,
  }),
);
