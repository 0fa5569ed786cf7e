import type { Viewer } from '../auth/index.ts';
import type { Database } from '../db/index.ts';
import { badInput, notFound, unauthenticated } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { type PubSub, Subscription } from '../pubsub/index.ts';
import type { Binding } from './connections.ts';
import { type ChatMessageEvent, type PresencePingEvent, topic } from './events.ts';
import type { LimitReporter, RateLimit } from './limits.ts';
import type { Membership } from './membership.ts';
import type { Users } from './users.ts';

/** A stored chat message: real id (decimal string), ISO-8601 createdAt. */
export type ChatMessage = ChatMessageEvent;

/** A user of the viewer's group got its first open connection (active) or lost its last. */
export interface ConnectionState {
  userId: string;
  active: boolean;
}

export type ChatEvent = ChatMessage | ConnectionState;

export const isConnectionState = (event: ChatEvent): event is ConnectionState => 'active' in event;

/** What `sendChatMessage` (and a chatter WebSocket frame) carries; the sender is the viewer. */
export interface SendInput {
  to: string;
  text?: string | null | undefined;
  imagePath?: string | null | undefined;
}

export interface ChatOptions {
  db: Database;
  pubsub: PubSub;
  membership: Membership;
  users: Users;
  logger: Logger;
  /** Longest text in characters (CHAT_MAX_LENGTH). */
  maxLength: number;
  /** Events buffered per chat subscription before its connection closes as slow (4499). */
  subscriptionBuffer: number;
  /** The per-user rate of `send` (RATE_LIMIT_CHAT). */
  rateLimit?: RateLimit;
  /** Told when CHAT_MAX_LENGTH refuses a text. */
  onLimit?: LimitReporter;
  /**
   * The user's own last presence ping (INVISIBLE included), or null. A user whose last ping is
   * INVISIBLE is not active in `connections` and ConnectionState. Default: nobody is invisible.
   */
  ownPing?: (userId: string) => Promise<Pick<PresencePingEvent, 'status' | 'time'> | null>;
}

/** The answer for a recipient or peer that is unknown or in another group: the same for both. */
const unknownUser = (userId: string) => notFound(`Unknown user ${JSON.stringify(userId)}`);

/** Default and largest page of `messages`. */
export const DEFAULT_PAGE = 50;
export const MAX_PAGE = 200;
const MAX_IMAGE_PATH = 2048;

/** The membership set of users with an open connection in `group` (any transport, instance). */
const presenceSet = (group: string) => `chat-presence:${encodeURIComponent(group)}`;

/** One key per conversation, whatever the direction (unambiguous for any ids). */
const pairKey = (a: string, b: string) => JSON.stringify(a < b ? [a, b] : [b, a]);

type Row = {
  id: bigint;
  fromId: string;
  toId: string;
  text: string | null;
  imagePath: string | null;
  createdAt: Date;
};

const toMessage = (row: Row): ChatMessage => ({
  id: row.id.toString(),
  from: row.fromId,
  to: row.toId,
  text: row.text,
  imagePath: row.imagePath,
  createdAt: row.createdAt.toISOString(),
});

const optionalText = (value: string | null | undefined) =>
  value === null || value === undefined || value === '' ? null : value;

/** Moves every event of `source` into `target`, synchronously, until either ends. */
function pump<S, T>(source: Subscription<S>, target: Subscription<T>, map: (event: S) => T | null) {
  target.onEnd(() => source.end());
  source.drain({
    take(event) {
      const mapped = map(event);
      if (mapped !== null && !target.push(mapped)) source.end();
    },
  });
}

/**
 * One-to-one chat within a group. Messages are stored in Postgres first, then published once
 * on each party's own topic, so every open chat stream of sender and recipient on every
 * instance gets them once (at most once live; `messages` is the complete history). Who is
 * online comes from the membership registry: a set per group of users with at least one open
 * connection (any transport, any instance), fed by `track`.
 */
export function createChat(options: ChatOptions) {
  const { db, pubsub, membership, users, logger } = options;
  const { prisma } = db;

  const requireUser = (viewer: Viewer | null) => {
    if (!viewer) throw unauthenticated('Anonymous users cannot chat');
    return viewer;
  };

  /** Stores and delivers one message from the viewer. */
  async function send(viewerOrNull: Viewer | null, input: SendInput): Promise<ChatMessage> {
    const viewer = requireUser(viewerOrNull);
    await options.rateLimit?.(viewer);
    const to = typeof input.to === 'string' ? input.to : '';
    if (to === '') throw badInput('The recipient is required');
    const text = optionalText(input.text);
    const imagePath = optionalText(input.imagePath);
    if (text === null && imagePath === null) throw badInput('A text or an imagePath is required');
    if (text !== null && text.length > options.maxLength) {
      options.onLimit?.('chatLength', { user: viewer.userId, length: text.length });
      throw badInput(`The text is ${text.length} characters; the limit is ${options.maxLength}`);
    }
    if (imagePath !== null && imagePath.length > MAX_IMAGE_PATH) {
      throw badInput(`The imagePath is longer than ${MAX_IMAGE_PATH} characters`);
    }
    await users.ensure(viewer);
    const found = await users.find([viewer.userId, to]);
    // A user of another group is answered as an unknown one: no way to probe other groups.
    const group = found.get(viewer.userId)?.group ?? null;
    if (group === null || found.get(to)?.group !== group) throw unknownUser(to);
    const row = await prisma.chatMessage.create({
      data: {
        fromId: viewer.userId,
        toId: to,
        pairKey: pairKey(viewer.userId, to),
        text,
        imagePath,
      },
    });
    const message = toMessage(row);
    // Stored: from here on the message exists whatever happens to live delivery.
    const parties = to === viewer.userId ? [to] : [viewer.userId, to];
    await Promise.all(
      parties.map((userId) =>
        pubsub.publish(topic('chat', userId), message).catch((error: unknown) => {
          logger.error({ err: error, messageId: message.id }, 'chat delivery failed');
        }),
      ),
    );
    return message;
  }

  /**
   * The conversation of the viewer with `peerId`, ordered by id ascending: the `limit` (default
   * 50, at most 200) messages just before `before` (or the latest). Page back by passing the
   * first id of a page as the next `before`. NOT_FOUND when the peer is unknown or not in the
   * viewer's chat group (the same answer, so other groups cannot be probed).
   */
  async function history(
    viewerOrNull: Viewer | null,
    peerId: string,
    page: { before?: string | null | undefined; limit?: number | null | undefined } = {},
  ): Promise<ChatMessage[]> {
    const viewer = requireUser(viewerOrNull);
    const limit = Math.min(page.limit ?? DEFAULT_PAGE, MAX_PAGE);
    if (!Number.isInteger(limit) || limit < 1) throw badInput('limit must be a positive integer');
    let before: bigint | null = null;
    if (page.before !== null && page.before !== undefined) {
      if (!/^\d{1,18}$/.test(page.before)) throw badInput('before must be a message id');
      before = BigInt(page.before);
    }
    if (peerId !== viewer.userId) {
      await users.ensure(viewer);
      const found = await users.find([viewer.userId, peerId]);
      // As in send: a user of another group is answered as an unknown one.
      const group = found.get(viewer.userId)?.group ?? null;
      if (group === null || found.get(peerId)?.group !== group) throw unknownUser(peerId);
    }
    const rows = await prisma.chatMessage.findMany({
      where: {
        pairKey: pairKey(viewer.userId, peerId),
        ...(before === null ? {} : { id: { lt: before } }),
      },
      orderBy: { id: 'desc' },
      take: limit,
    });
    return rows.reverse().map(toMessage);
  }

  /** Every user of the viewer's group, with whether it has an open connection anywhere. */
  async function connections(viewerOrNull: Viewer | null): Promise<ConnectionState[]> {
    const viewer = requireUser(viewerOrNull);
    const { group } = await users.self(viewer);
    if (group === null) return [{ userId: viewer.userId, active: true }];
    const [members, online] = await Promise.all([
      users.inGroup(group),
      membership.members(presenceSet(group)),
    ]);
    const active = new Set(online);
    return members.map((user) => ({ userId: user.userId, active: active.has(user.userId) }));
  }

  /**
   * The viewer's chat stream: messages to or from it (only those with `peerId` when given) and
   * ConnectionState changes of the other users of its group. Ends with the connection; a
   * consumer that falls `subscriptionBuffer` events behind has its connection closed (4499).
   *
   * With `afterId` it resumes: first every stored message after that id (ids order messages:
   * a later message has a larger id), oldest first, then live ones, with no gap and no repeat
   * between the two. It listens before it reads, and drops live messages the replay already
   * had (by id, so a message committed late with a smaller id is still delivered once). At most
   * `subscriptionBuffer` messages are replayed: further behind, BAD_USER_INPUT says to page
   * with `messages` first.
   */
  async function subscribe(
    viewerOrNull: Viewer | null,
    peerId: string | null,
    connection: Binding,
    afterId: string | null = null,
  ): Promise<Subscription<ChatEvent>> {
    const viewer = requireUser(viewerOrNull);
    const { userId } = viewer;
    if (afterId !== null && !/^\d{1,18}$/.test(afterId)) {
      throw badInput('afterId must be a message id');
    }
    const { group } = await users.self(viewer);
    const capacity = options.subscriptionBuffer;
    const events = new Subscription<ChatEvent>({ capacity, owner: connection });
    if (events.done) return events;
    const messages = pubsub.subscribe(topic('chat', userId), {
      capacity,
      owner: connection,
      ...(peerId === null ? {} : { filter: (m) => m.from === peerId || m.to === peerId }),
    });
    let replayed: Set<string> | null = null;
    if (afterId !== null) {
      try {
        replayed = await replay(userId, peerId, BigInt(afterId), events, capacity);
      } catch (error) {
        events.end();
        messages.end();
        throw error;
      }
    }
    pump(messages, events, (m) => (replayed?.has(m.id) ? null : m));
    if (group !== null) {
      const changes = membership.watch(presenceSet(group), { capacity, owner: connection });
      pump(changes, events, (c) =>
        c.member === userId ? null : { userId: c.member, active: c.present },
      );
    }
    return events;
  }

  /** Pushes the stored messages after `afterId` into `events`; returns their ids. */
  async function replay(
    userId: string,
    peerId: string | null,
    afterId: bigint,
    events: Subscription<ChatEvent>,
    limit: number,
  ): Promise<Set<string>> {
    const rows = await prisma.chatMessage.findMany({
      where: {
        id: { gt: afterId },
        ...(peerId === null
          ? { OR: [{ fromId: userId }, { toId: userId }] }
          : { pairKey: pairKey(userId, peerId) }),
      },
      orderBy: { id: 'asc' },
      take: limit + 1,
    });
    if (rows.length > limit) {
      throw badInput(
        `More than ${limit} messages after ${afterId}: page through them with messages, then resume from the last id`,
      );
    }
    const ids = new Set<string>();
    for (const row of rows) {
      const message = toMessage(row);
      ids.add(message.id);
      events.push(message);
    }
    return ids;
  }

  /**
   * Presence tracking for the connection registry: while a connection of a user with a group
   * is open and the user's last presence ping is not INVISIBLE, the user is a member of its
   * group's presence set (reference-counted, so only the first open and the last close
   * anywhere announce a change). An INVISIBLE ping leaves the set (others see active=false), a
   * visible ping joins it again. Service callers are not users.
   */
  async function track(connection: Binding): Promise<(() => void) | null> {
    const viewer = connection.viewer;
    if (!viewer || viewer.isService) return null;
    const { group } = await users.self(viewer);
    if (group === null || connection.closed) return null;
    const set = presenceSet(group);
    let release: (() => void) | null = null;
    let ended = false;
    /** Time of the newest ping applied: an older one (late, or the cache) changes nothing. */
    let newest = Number.NEGATIVE_INFINITY;
    const show = (visible: boolean) => {
      if (ended) return;
      if (visible && !release) release = membership.join(set, viewer.userId);
      else if (!visible && release) {
        release();
        release = null;
      }
    };
    const apply = (ping: Pick<PresencePingEvent, 'status' | 'time'>) => {
      if (ping.time <= newest) return;
      newest = ping.time;
      show(ping.status !== 'INVISIBLE');
    };
    // Listen before reading the last ping, so a ping in between is not missed.
    const pings = pubsub.subscribe(topic('presence', viewer.userId), {
      capacity: 1,
      owner: connection,
    });
    pings.drain({ take: apply });
    const stop = () => {
      ended = true;
      pings.end();
      release?.();
      release = null;
    };
    try {
      const last = options.ownPing ? await options.ownPing(viewer.userId) : null;
      if (last) apply(last);
      else if (newest === Number.NEGATIVE_INFINITY) show(true);
    } catch (error) {
      // Presence unknown: count the user as connected rather than hide a real connection.
      logger.warn({ err: error }, 'chat presence: reading the last ping failed');
      if (newest === Number.NEGATIVE_INFINITY) show(true);
    }
    if (connection.closed) {
      stop();
      return null;
    }
    return stop;
  }

  return { send, history, connections, subscribe, track };
}

export type Chat = ReturnType<typeof createChat>;
