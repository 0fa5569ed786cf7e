import type { User } from '../domain/users.ts';
import { builder } from './builder.ts';

const UserRef = builder.objectRef<User>('User').implement({
  description: 'A user known to the server and its chat group.',
  fields: (t) => ({
    userId: t.exposeID('userId'),
    group: t.exposeString('group', {
      nullable: true,
      description: 'Users chat only within their group; null: the user cannot chat.',
    }),
  }),
});

const UserInput = builder.inputType('UserInput', {
  fields: (t) => ({
    userId: t.id({ required: true }),
    group: t.string({
      description: 'The chat group. null removes it; absent keeps the stored group.',
    }),
  }),
});

builder.mutationField('upsertUser', (t) =>
  t.field({
    type: UserRef,
    description: 'Create or update a user and its chat group. Service callers only.',
    args: { input: t.arg({ type: UserInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      ctx.services.users.upsert(ctx.viewer, { userId: String(input.userId), group: input.group }),
  }),
);
