import { builder } from './builder.ts';

const DropUserResultRef = builder
  .objectRef<{ connectionsClosed: number }>('DropUserResult')
  .implement({
    fields: (t) => ({
      connectionsClosed: t.exposeInt('connectionsClosed', {
        description: 'Connections closed on every instance that answered in time.',
      }),
    }),
  });

builder.mutationField('dropUser', (t) =>
  t.field({
    type: DropUserResultRef,
    description:
      'Close every open connection of a user on every instance (graphql-ws close 4403 "dropped", SSE streams end, legacy sockets close their way). Service callers only.',
    args: { userId: t.arg.id({ required: true }), reason: t.arg.string() },
    resolve: async (_root, { userId, reason }, ctx) => ({
      connectionsClosed: await ctx.services.dropUser.drop(ctx.viewer, String(userId), reason),
    }),
  }),
);
