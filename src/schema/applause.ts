import type { ApplauseState } from '../domain/applause.ts';
import { builder } from './builder.ts';

const ApplauseRef = builder.objectRef<ApplauseState>('Applause').implement({
  description: 'The applause of a meeting.',
  fields: (t) => ({
    meetingId: t.exposeID('meetingId'),
    level: t.exposeInt('level', {
      description: 'Distinct users who applauded within the last APPLAUSE_WINDOW_S seconds.',
    }),
    presentUsers: t.exposeInt('presentUsers', {
      description: 'Distinct users with an open notify or applause subscription on the meeting.',
    }),
  }),
});

builder.mutationField('sendApplause', (t) =>
  t.boolean({
    description: 'Count one applause of the viewer in a meeting.',
    args: { meetingId: t.arg.id({ required: true }) },
    resolve: async (_root, { meetingId }, ctx) => {
      await ctx.services.applause.send(ctx.viewer, String(meetingId));
      return true;
    },
  }),
);

builder.subscriptionField('applause', (t) =>
  t.field({
    type: ApplauseRef,
    description:
      'First event at once: the current level. Then every change of level or presentUsers.',
    args: { meetingId: t.arg.id({ required: true }) },
    subscribe: (_root, { meetingId }, ctx) =>
      ctx.services.applause.subscribe(ctx.viewer, String(meetingId), ctx.connection),
    resolve: (event) => event,
  }),
);
