import type { Applause } from './applause.ts';
import type { Autoupdate } from './autoupdate.ts';
import type { ChangeLog } from './change-log.ts';
import type { Chat } from './chat.ts';
import type { DropUser } from './drop-user.ts';
import type { Limits } from './limits.ts';
import type { Meetings } from './meetings.ts';
import type { Membership } from './membership.ts';
import type { Notify } from './notify.ts';
import type { Presence } from './presence.ts';
import type { Projector } from './projector.ts';
import type { Sessions } from './sessions.ts';
import type { Users } from './users.ts';
import type { WsTokens } from './ws-tokens.ts';

/**
 * Every capability of the server; GraphQL resolvers and legacy shims call only these. Built by
 * the composition root (src/services.ts), which picks the stores.
 */
export interface Services {
  /** Unique per process. */
  instanceId: string;
  membership: Membership;
  notify: Notify;
  /** OpenSlides meetings: applause switch and member lists (Postgres). */
  meetings: Meetings;
  /** OpenSlides applause: level and present users per meeting, across instances. */
  applause: Applause;
  /** Presence pings, last seen and presence streams (backend-heartbeat). */
  presence: Presence;
  /** Users and their chat groups (Postgres). */
  users: Users;
  /** One-to-one chat: messages, history, who is online in a group. */
  chat: Chat;
  /** Single-use tokens for opening WebSockets (chatter's ws_token). */
  wsTokens: WsTokens;
  /** The autoupdate change log: writeData, pushEvents, pruning. */
  changeLog: ChangeLog;
  /** Autoupdate streams (keyed data and events per viewer, with replay). */
  autoupdate: Autoupdate;
  /** Projector streams rendered from the keyed data. */
  projector: Projector;
  /** In-band token refresh and expiry warnings of live connections. */
  sessions: Sessions;
  /** Closes a user's connections on every instance. */
  dropUser: DropUser;
  /** Per-user rate limits and the reporting of refused requests (logs, metrics). */
  limits: Limits;
  /** Stops timers and releases shared entries (shutdown). */
  stop(): Promise<void>;
}
