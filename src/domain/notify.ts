import { randomInt } from 'node:crypto';
import type { Viewer } from '../auth/index.ts';
import { badInput, forbidden, unauthenticated } from '../errors.ts';
import { type PubSub, Subscription } from '../pubsub/index.ts';
import type { Binding } from './connections.ts';
import { type NotifyEnvelope, topic } from './events.ts';
import { checkJsonInput, stringProblem } from './json-input.ts';
import type { LimitReporter, RateLimit } from './limits.ts';
import { type Meetings, meetingPresenceSet } from './meetings.ts';
import type { Membership } from './membership.ts';

/** The first event of every notify stream: the channel id its owner publishes with. */
export interface NotifyChannel {
  channelId: string;
}

/** A delivered notify message (the envelope without its targets is what clients see). */
export type NotifyMessage = NotifyEnvelope;
export type NotifyEvent = NotifyChannel | NotifyMessage;

export const isNotifyChannel = (event: NotifyEvent): event is NotifyChannel => 'channelId' in event;

/** What `publish` accepts; mirrors the GraphQL PublishInput and the legacy bodies. */
export interface PublishInput {
  channelId: string;
  name: string;
  message?: unknown;
  toAll?: boolean | null | undefined;
  toMeeting?: string | null | undefined;
  toUsers?: readonly string[] | null | undefined;
  toChannels?: readonly string[] | null | undefined;
}

export interface NotifyOptions {
  pubsub: PubSub;
  /** Member lists: a meeting with members admits only members to its stream and messages. */
  meetings: Meetings;
  /** Users with a notify stream on a meeting are present there (applause presentUsers). */
  membership: Membership;
  /** Events buffered per subscriber before it is closed as a slow consumer. */
  subscriptionBuffer: number;
  /** Largest serialized `message` accepted. */
  messageMaxBytes: number;
  /** Most entries in each of `toUsers` and `toChannels` (NOTIFY_MAX_TARGETS). Default: none. */
  maxTargets?: number;
  /** Longest `name`, in characters (NOTIFY_MAX_NAME_LENGTH). Default: none. */
  maxNameLength?: number;
  /** Deepest nesting of `message` (JSON_MAX_DEPTH). Default 64. */
  maxJsonDepth?: number;
  /** The per-user rate of `publish` (RATE_LIMIT_PUBLISH). */
  rateLimit?: RateLimit;
  /** Told when MESSAGE_MAX_BYTES, NOTIFY_MAX_TARGETS, NOTIFY_MAX_NAME_LENGTH or JSON_MAX_DEPTH refuses a message. */
  onLimit?: LimitReporter;
}

/**
 * How strictly `publish` checks a message. The GraphQL API and the OS3 shim use the defaults;
 * the ICC shim relaxes both checks because the original ICC accepted such messages.
 */
export interface PublishRules {
  /**
   * Default true: a message without toAll, toMeeting, toUsers or toChannels is refused
   * (BAD_USER_INPUT). With false it is accepted and reaches no one (nothing is published).
   */
  requireTarget?: boolean;
  /**
   * Default true: the name `applause`, which OS3 uses for the server's own applause messages,
   * is refused. With false it is an ordinary name.
   */
  reserveNames?: boolean;
}

/** The distinct entries of a target list; BAD_USER_INPUT past `max` or for a bad entry. */
function targetList(
  list: readonly string[] | null | undefined,
  field: string,
  max: number,
  report: (limit: string, count: number) => void,
): string[] {
  if (!list) return [];
  if (list.length > max) {
    report('notifyTargets', list.length);
    throw badInput(`${field} takes at most ${max} entries, got ${list.length}`);
  }
  const distinct = new Set<string>();
  for (const entry of list) {
    if (typeof entry !== 'string' || entry === '') {
      throw badInput(`${field} holds an empty or non-string entry`);
    }
    const problem = stringProblem(entry);
    if (problem) throw badInput(`${field}: entries ${problem}`);
    distinct.add(entry);
  }
  return [...distinct];
}

/** Names reserved for the server's own messages. */
const RESERVED_NAMES = new Set(['applause']);
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

function randomInstancePart(): string {
  let out = '';
  for (let i = 0; i < 8; i++) out += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  return out;
}

/**
 * The user id inside a channel id `<host>:<userId>:<counter>`, or null when malformed. As in
 * the originals (OS3 `internal/notify/channel_id.go`), any host and counter are accepted and the
 * user is the middle part, so `foo:1:0` belongs to user 1. Our user ids are strings and may
 * contain `:` (e.g. `urn:user:5`) where the originals' integers could not: the host is read up to
 * the first `:` and the counter after the last one, and everything between is the user. Host and
 * counter therefore never contain `:`; an id with fewer than three parts, or an empty user, is
 * malformed.
 */
export function channelOwner(channelId: string): string | null {
  const match = /^[^:]*:(.+):[^:]*$/.exec(channelId);
  return match?.[1] ?? null;
}

/**
 * Notify (OpenSlides ICC / OS3): clients open a notify stream, get a channel id, and publish
 * messages to a meeting, to users, to channels or to everyone. Delivery is at most once, with no
 * replay; the sender's own matching streams receive its messages too.
 */
export function createNotify(options: NotifyOptions) {
  const instancePart = randomInstancePart();
  let counter = 0;
  const notifyTopic = topic('notify');

  // Routing by recipient: this instance's notify streams indexed by what a message can be
  // addressed to, so a message costs its recipients, not every stream on the instance.
  type Stream = Subscription<NotifyEvent>;
  const streams = new Set<Stream>();
  const byUser = new Map<string, Set<Stream>>();
  const byMeeting = new Map<string, Set<Stream>>();
  const byChannel = new Map<string, Stream>();
  let stopListening: (() => void) | null = null;

  const add = (index: Map<string, Set<Stream>>, key: string, stream: Stream) => {
    let set = index.get(key);
    if (!set) {
      set = new Set();
      index.set(key, set);
    }
    set.add(stream);
  };
  const remove = (index: Map<string, Set<Stream>>, key: string, stream: Stream) => {
    const set = index.get(key);
    set?.delete(stream);
    if (set?.size === 0) index.delete(key);
  };

  /** Pushes a published message to the streams it is addressed to, each once. */
  function route(message: NotifyMessage) {
    if (message.toAll) {
      for (const stream of streams) stream.push(message);
      return;
    }
    const recipients = new Set<Stream>();
    if (message.toMeeting !== null) {
      for (const stream of byMeeting.get(message.toMeeting) ?? []) recipients.add(stream);
    }
    for (const userId of message.toUsers) {
      for (const stream of byUser.get(userId) ?? []) recipients.add(stream);
    }
    for (const channelId of message.toChannels) {
      const stream = byChannel.get(channelId);
      if (stream) recipients.add(stream);
    }
    for (const stream of recipients) stream.push(message);
  }

  return {
    /**
     * Opens a notify stream for the viewer: first its NotifyChannel, then every message that
     * targets everyone, the stream's meeting, the viewer or the channel. Ends with the connection.
     * With a meetingId the viewer must be admitted to the meeting (FORBIDDEN for non-members of
     * a meeting with members) and counts as present there while the stream is open.
     */
    async subscribe(
      viewer: Viewer | null,
      meetingId: string | null,
      connection: Binding,
    ): Promise<Subscription<NotifyEvent>> {
      if (!viewer) throw unauthenticated('Anonymous users cannot receive notify messages');
      if (meetingId !== null) await options.meetings.enter(viewer, meetingId);
      counter += 1;
      const channelId = `${instancePart}:${viewer.userId}:${counter}`;
      const { userId } = viewer;
      const stream: Stream = new Subscription<NotifyEvent>({
        capacity: options.subscriptionBuffer,
        owner: connection,
        initial: [{ channelId }],
      });
      if (stream.done) return stream;
      streams.add(stream);
      add(byUser, userId, stream);
      if (meetingId !== null) add(byMeeting, meetingId, stream);
      byChannel.set(channelId, stream);
      stopListening ??= options.pubsub.listen(notifyTopic, route);
      stream.onEnd(() => {
        streams.delete(stream);
        remove(byUser, userId, stream);
        if (meetingId !== null) remove(byMeeting, meetingId, stream);
        byChannel.delete(channelId);
        if (streams.size === 0) {
          stopListening?.();
          stopListening = null;
        }
      });
      if (meetingId !== null) {
        stream.onEnd(options.membership.join(meetingPresenceSet(meetingId), userId));
        // Members-changed hook: a viewer removed from the meeting loses the stream (FORBIDDEN).
        const stopMembers = options.meetings.onMembersChanged(meetingId, (admits) => {
          if (!admits(viewer)) stream.endWith(forbidden(`No longer a member of ${meetingId}`));
        });
        stream.onEnd(stopMembers);
      }
      return stream;
    },

    /**
     * Validates and publishes one message; throws AppError on bad input, changes nothing then.
     * `rules` relaxes the target and reserved-name checks (see PublishRules; strict by default).
     */
    async publish(
      viewer: Viewer | null,
      input: PublishInput,
      rules: PublishRules = {},
    ): Promise<void> {
      const { requireTarget = true, reserveNames = true } = rules;
      if (!viewer) throw unauthenticated('Anonymous users cannot publish');
      await options.rateLimit?.(viewer);
      const owner = channelOwner(input.channelId);
      if (owner === null) throw badInput(`Invalid channel id: ${JSON.stringify(input.channelId)}`);
      if (owner !== viewer.userId) throw badInput('The channel id does not belong to the sender');
      if (typeof input.name !== 'string' || input.name.trim() === '') {
        throw badInput('The name must not be empty');
      }
      const maxName = options.maxNameLength ?? Number.POSITIVE_INFINITY;
      if (input.name.length > maxName) {
        options.onLimit?.('notifyNameLength', { user: viewer.userId, length: input.name.length });
        throw badInput(`The name is ${input.name.length} characters; the limit is ${maxName}`);
      }
      const nameProblem = stringProblem(input.name);
      if (nameProblem) throw badInput(`The name ${nameProblem}`);
      if (reserveNames && RESERVED_NAMES.has(input.name)) {
        throw badInput(`The name "${input.name}" is reserved`);
      }
      const maxTargets = options.maxTargets ?? Number.POSITIVE_INFINITY;
      const report = (limit: string, count: number) =>
        options.onLimit?.(limit, { user: viewer.userId, count });
      const toUsers = targetList(input.toUsers, 'toUsers', maxTargets, report);
      const toChannels = targetList(input.toChannels, 'toChannels', maxTargets, report);
      const toMeeting = input.toMeeting ?? null;
      const toAll = input.toAll === true;
      const untargeted =
        !toAll && toMeeting === null && toUsers.length === 0 && toChannels.length === 0;
      if (untargeted && requireTarget) {
        throw badInput('At least one target is required (toAll, toMeeting, toUsers or toChannels)');
      }
      const message = input.message ?? null;
      checkJsonInput(message, 'The message', options.maxJsonDepth ?? 64, (limit, fields) =>
        options.onLimit?.(limit, { user: viewer.userId, ...fields }),
      );
      const size = Buffer.byteLength(JSON.stringify(message));
      if (size > options.messageMaxBytes) {
        options.onLimit?.('messageBytes', { user: viewer.userId, size });
        throw badInput(`The message is ${size} bytes; the limit is ${options.messageMaxBytes}`);
      }
      // Only members may send into a meeting with a member list.
      if (toMeeting !== null) await options.meetings.enter(viewer, toMeeting);
      // Accepted without a target: it would reach no one, so nothing travels.
      if (untargeted) return;
      await options.pubsub.publish(notifyTopic, {
        senderUserId: viewer.userId,
        senderChannelId: input.channelId,
        name: input.name,
        message,
        toAll,
        toMeeting,
        toUsers,
        toChannels,
      });
    },
  };
}

export type Notify = ReturnType<typeof createNotify>;
