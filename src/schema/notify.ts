import {
  isNotifyChannel,
  type NotifyChannel,
  type NotifyEvent,
  type NotifyMessage,
} from '../domain/notify.ts';
import { builder } from './builder.ts';

const NotifyChannelRef = builder.objectRef<NotifyChannel>('NotifyChannel').implement({
  fields: (t) => ({ channelId: t.exposeString('channelId') }),
});

const NotifyMessageRef = builder.objectRef<NotifyMessage>('NotifyMessage').implement({
  fields: (t) => ({
    senderUserId: t.exposeID('senderUserId'),
    senderChannelId: t.exposeString('senderChannelId'),
    name: t.exposeString('name'),
    message: t.expose('message', { type: 'JSON', nullable: true }),
  }),
});

const NotifyEventRef = builder.unionType('NotifyEvent', {
  types: [NotifyChannelRef, NotifyMessageRef],
  resolveType: (event: NotifyEvent) =>
    isNotifyChannel(event) ? NotifyChannelRef : NotifyMessageRef,
});

const PublishInput = builder.inputType('PublishInput', {
  fields: (t) => ({
    channelId: t.string({
      required: true,
      description: "The sender's channel id, as its own notify subscription received it.",
    }),
    toMeeting: t.id(),
    toUsers: t.idList({ required: false }),
    toChannels: t.stringList(),
    toAll: t.boolean(),
    name: t.string({ required: true }),
    message: t.field({ type: 'JSON' }),
  }),
});

builder.mutationField('publish', (t) =>
  t.boolean({
    description:
      'Send a notify message (OpenSlides ICC / OS3 notify). At least one target is required.',
    args: { input: t.arg({ type: PublishInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      await ctx.services.notify.publish(ctx.viewer, input);
      return true;
    },
  }),
);

builder.subscriptionField('notify', (t) =>
  t.field({
    type: NotifyEventRef,
    description:
      'First event: the NotifyChannel of this subscription. Then every NotifyMessage addressed to it.',
    args: { meetingId: t.arg.id() },
    subscribe: (_root, { meetingId }, ctx) =>
      ctx.services.notify.subscribe(ctx.viewer, meetingId ?? null, ctx.connection),
    resolve: (event) => event,
  }),
);
