import {
  type ChatEvent,
  type ChatMessage,
  type ConnectionState,
  isConnectionState,
} from '../domain/chat.ts';
import type { WsToken } from '../domain/ws-tokens.ts';
import { builder } from './builder.ts';

const ChatMessageRef = builder.objectRef<ChatMessage>('ChatMessage').implement({
  description: 'A stored chat message; ids grow in the order messages were sent.',
  fields: (t) => ({
    id: t.exposeID('id'),
    from: t.exposeID('from'),
    to: t.exposeID('to'),
    text: t.exposeString('text', { nullable: true }),
    imagePath: t.exposeString('imagePath', { nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

const ConnectionStateRef = builder.objectRef<ConnectionState>('ConnectionState').implement({
  description: 'Whether a user has at least one open connection, on any instance.',
  fields: (t) => ({
    userId: t.exposeID('userId'),
    active: t.exposeBoolean('active'),
  }),
});

const ChatEventRef = builder.unionType('ChatEvent', {
  types: [ChatMessageRef, ConnectionStateRef],
  resolveType: (event: ChatEvent) =>
    isConnectionState(event) ? ConnectionStateRef : ChatMessageRef,
});

const WsTokenRef = builder.objectRef<WsToken>('WsToken').implement({
  description: 'A single-use token for opening a WebSocket: pass it as `?token=`.',
  fields: (t) => ({
    token: t.exposeString('token'),
    expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
  }),
});

builder.queryField('messages', (t) =>
  t.field({
    type: [ChatMessageRef],
    description:
      'Chat history between the viewer and peerId, ordered by id ascending. `before` pages back.',
    args: {
      peerId: t.arg.id({ required: true }),
      before: t.arg.id({
        description: 'Only messages with a smaller id (the first id of a page).',
      }),
      limit: t.arg.int({ defaultValue: 50, description: 'Page size, at most 200.' }),
    },
    resolve: (_root, args, ctx) =>
      ctx.services.chat.history(ctx.viewer, String(args.peerId), {
        before: args.before === null || args.before === undefined ? null : String(args.before),
        limit: args.limit,
      }),
  }),
);

builder.queryField('connections', (t) =>
  t.field({
    type: [ConnectionStateRef],
    description:
      "Users of the viewer's group (the viewer included) and whether each has an open connection now.",
    resolve: (_root, _args, ctx) => ctx.services.chat.connections(ctx.viewer),
  }),
);

builder.mutationField('sendChatMessage', (t) =>
  t.field({
    type: ChatMessageRef,
    description: 'Send a chat message from the viewer.',
    args: {
      to: t.arg.id({ required: true }),
      text: t.arg.string({ description: 'Up to CHAT_MAX_LENGTH characters.' }),
      imagePath: t.arg.string(),
    },
    resolve: (_root, args, ctx) =>
      ctx.services.chat.send(ctx.viewer, {
        to: String(args.to),
        text: args.text,
        imagePath: args.imagePath,
      }),
  }),
);

builder.mutationField('createWsToken', (t) =>
  t.field({
    type: WsTokenRef,
    description: "A short-lived single-use token for opening a WebSocket (chatter's ws_token).",
    resolve: (_root, _args, ctx) => ctx.services.wsTokens.create(ctx.viewer),
  }),
);

builder.subscriptionField('chat', (t) =>
  t.field({
    type: ChatEventRef,
    description:
      'Chat messages to or from the viewer (all its devices) and connection changes in its group. With afterId: first every stored message after that id (oldest first), then live ones, with no gap and no repeat between the two.',
    args: {
      peerId: t.arg.id({ description: 'Only messages of this conversation.' }),
      afterId: t.arg.id({
        description:
          'Resume after this message id (the last one seen): ids order messages. At most SUBSCRIPTION_BUFFER messages are replayed.',
      }),
    },
    subscribe: (_root, { peerId, afterId }, ctx) =>
      ctx.services.chat.subscribe(
        ctx.viewer,
        peerId === null || peerId === undefined ? null : String(peerId),
        ctx.connection,
        afterId === null || afterId === undefined ? null : String(afterId),
      ),
    resolve: (event) => event,
  }),
);
