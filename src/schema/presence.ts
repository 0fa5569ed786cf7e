import { type PresencePing, STATUS_CODES } from '../domain/presence.ts';
import { builder, requireViewer } from './builder.ts';

const PresenceStatusRef = builder.enumType('PresenceStatus', {
  description: 'A presence status; legacy codes "0".."3" in this order.',
  values: ['ACTIVE', 'AWAY', 'DO_NOT_DISTURB', 'INVISIBLE'] as const,
});

const PresencePingRef = builder.objectRef<PresencePing>('PresencePing').implement({
  description: 'A presence ping as the viewer may see it.',
  fields: (t) => ({
    userId: t.exposeID('userId'),
    status: t.expose('status', { type: PresenceStatusRef }),
    statusCode: t.exposeString('statusCode', {
      description: 'The raw status code as sent by legacy clients ("0".."3" or any string).',
    }),
    time: t.expose('time', { type: 'DateTime' }),
    online: t.exposeBoolean('online', {
      description: 'Whether the last ping is younger than the presence timeout.',
    }),
  }),
});

builder.mutationField('ping', (t) =>
  t.field({
    type: PresencePingRef,
    description:
      "Record the viewer's presence (heartbeat). Pings sooner than PING_MIN_INTERVAL_MS after the last one change nothing and return the last one.",
    args: {
      status: t.arg({ type: PresenceStatusRef, required: false, defaultValue: 'ACTIVE' }),
    },
    resolve: (_root, { status }, ctx) =>
      ctx.services.presence.ping(requireViewer(ctx), STATUS_CODES[status ?? 'ACTIVE']),
  }),
);

builder.queryField('lastSeen', (t) =>
  t.field({
    type: PresencePingRef,
    nullable: true,
    description: 'The last ping of a user as the viewer may see it; null if never seen.',
    args: { userId: t.arg.id({ required: true }) },
    resolve: (_root, { userId }, ctx) =>
      ctx.services.presence.lastSeen(requireViewer(ctx), String(userId)),
  }),
);

builder.subscriptionField('presence', (t) =>
  t.field({
    type: PresencePingRef,
    description:
      'First event at once: the cached ping of userId, if any. Then every ping it makes, and the last ping with online=false when it times out.',
    args: { userId: t.arg.id({ required: true }) },
    subscribe: (_root, { userId }, ctx) =>
      ctx.services.presence.subscribe(requireViewer(ctx), String(userId), {
        owner: ctx.connection,
      }),
    resolve: (ping) => ping,
  }),
);
