import type { Meeting } from '../domain/meetings.ts';
import { builder } from './builder.ts';

const MeetingRef = builder.objectRef<Meeting>('Meeting').implement({
  description: 'An OpenSlides meeting: its applause switch and member list.',
  fields: (t) => ({
    id: t.exposeID('id'),
    applauseEnabled: t.exposeBoolean('applauseEnabled'),
    memberIds: t.exposeIDList('memberIds', {
      nullable: true,
      description: 'Only these users may enter the meeting; null when it is open to everyone.',
    }),
  }),
});

const MeetingInput = builder.inputType('MeetingInput', {
  fields: (t) => ({
    id: t.id({ required: true }),
    applauseEnabled: t.boolean({
      description: 'Whether users may applaud. Default true; absent keeps the stored value.',
    }),
    memberIds: t.idList({
      description:
        'When set, only these users may subscribe to and send into the meeting. Absent keeps the stored list; null opens the meeting.',
    }),
  }),
});

builder.mutationField('configureMeeting', (t) =>
  t.field({
    type: MeetingRef,
    description: 'Create or update a meeting (applause switch, member list). Service callers only.',
    args: { input: t.arg({ type: MeetingInput, required: true }) },
    resolve: (_root, { input }, ctx) => ctx.services.meetings.configure(ctx.viewer, input),
  }),
);
