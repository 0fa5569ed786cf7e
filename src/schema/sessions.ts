import type { SessionEvent } from '../domain/connections.ts';
import type { Session } from '../domain/sessions.ts';
import { builder } from './builder.ts';

const expiresAt = {
  type: 'DateTime',
  resolve: (s: { expiresAt: number }) => new Date(s.expiresAt),
} as const;

const SessionRef = builder.objectRef<Session>('Session').implement({
  description: 'The session of a connection: its user and when its token expires.',
  fields: (t) => ({
    userId: t.exposeID('userId'),
    expiresAt: t.field(expiresAt),
  }),
});

const TokenExpiringRef = builder.objectRef<SessionEvent>('TokenExpiring').implement({
  description:
    "The connection's token expires at expiresAt (within TOKEN_EXPIRY_WARNING_S): call refreshToken.",
  fields: (t) => ({ expiresAt: t.field(expiresAt) }),
});

const TokenRefreshedRef = builder.objectRef<SessionEvent>('TokenRefreshed').implement({
  description: 'refreshToken gave the connection a new token, which expires at expiresAt.',
  fields: (t) => ({ expiresAt: t.field(expiresAt) }),
});

const SessionEventRef = builder.unionType('SessionEvent', {
  types: [TokenExpiringRef, TokenRefreshedRef],
  resolveType: (event) => (event.kind === 'expiring' ? TokenExpiringRef : TokenRefreshedRef),
});

builder.mutationField('refreshToken', (t) =>
  t.field({
    type: SessionRef,
    description:
      "Replace the token of the connection this operation runs on (a graphql-ws socket, or a graphql-sse single-connection stream) without closing it or its subscriptions. The new token must be valid and name the same user; the connection then expires with the new token's exp. Over plain HTTP it only validates. UNAUTHENTICATED: invalid token; FORBIDDEN: another user.",
    args: { token: t.arg.string({ required: true }) },
    resolve: (_root, { token }, ctx) => ctx.services.sessions.refresh(ctx.connection, token),
  }),
);

builder.subscriptionField('session', (t) =>
  t.field({
    type: SessionEventRef,
    description:
      "The connection's own session: TokenExpiring when its token has TOKEN_EXPIRY_WARNING_S (default 60) seconds left, TokenRefreshed after each refreshToken on this connection.",
    subscribe: (_root, _args, ctx) => ctx.services.sessions.subscribe(ctx.connection),
    resolve: (event) => event,
  }),
);
