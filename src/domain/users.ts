import { timingSafeEqual } from 'node:crypto';
import type { Viewer } from '../auth/index.ts';
import type { Database } from '../db/index.ts';
import { badInput, forbidden, unauthenticated } from '../errors.ts';
import type { PubSub } from '../pubsub/index.ts';
import { topic } from './events.ts';

/** A user as stored: its id (the token's `sub`) and its chat group. */
export interface User {
  userId: string;
  /** Users chat only within their group; null: no group, no chat. */
  group: string | null;
}

/** What `upsertUser` (and chatter's `POST user`) accepts. */
export interface UserInput {
  userId: string;
  /** The chat group; null removes it. Absent: `upsert` keeps the stored group. */
  group?: string | null | undefined;
}

/**
 * Who may create users: a viewer with the `service` scope, or a legacy caller presenting a
 * shared secret (chatter's `Authorization: <secret>`).
 */
export type UserAdmin = Viewer | null | { secret: string };

export interface UsersOptions {
  db: Database;
  /** Tells every instance about changed groups (their caches follow). */
  pubsub: PubSub;
  /** Chatter's service secret (CHATTER_SERVICE_SECRET); undefined: only service tokens. */
  serviceSecret?: string | undefined;
  /** Users remembered as existing, and groups remembered, per instance. Default 10,000. */
  knownCacheSize?: number;
}

const MAX_ID_LENGTH = 200;
const MAX_GROUP_LENGTH = 200;
// Ids and groups end up in keys and URLs; control characters are never legitimate there.
// biome-ignore lint/suspicious/noControlCharactersInRegex: that is exactly what it matches.
const CONTROL = /[\u0000-\u001f\u007f]/;

function checkId(value: unknown, what: string, max: number): string {
  if (typeof value !== 'string' || value.trim() === '') throw badInput(`${what} is required`);
  if (value.length > max) throw badInput(`${what} is longer than ${max} characters`);
  if (CONTROL.test(value)) throw badInput(`${what} must not contain control characters`);
  return value;
}

function secretMatches(given: string, expected: string | undefined): boolean {
  if (expected === undefined) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A Map that forgets its oldest entries past `max` (insertion order is age). */
function boundedMap<V>(max: number) {
  const map = new Map<string, V>();
  return {
    get: (key: string) => map.get(key),
    has: (key: string) => map.has(key),
    set(key: string, value: V) {
      map.delete(key);
      map.set(key, value);
      if (map.size > max) {
        const oldest = map.keys().next().value;
        if (oldest !== undefined) map.delete(oldest);
      }
    },
  };
}

/** A Set that forgets its oldest entries past `max` (insertion order is age). */
function boundedSet(max: number) {
  const set = new Set<string>();
  return {
    has: (value: string) => set.has(value),
    add(value: string) {
      set.add(value);
      if (set.size > max) {
        const oldest = set.values().next().value;
        if (oldest !== undefined) set.delete(oldest);
      }
    },
  };
}

/**
 * Users and their chat groups in Postgres. A caller with a valid token that is not stored yet
 * is created from its token's `sub` and `group` on first use (`ensure`); after that the stored
 * group wins over the token's, so a service can move users between groups.
 */
export function createUsers(options: UsersOptions) {
  const { prisma } = options.db;
  // Users known to exist: `ensure` skips the database for them (one instance's view; rows are
  // never deleted, so a stale entry cannot lie).
  const known = boundedSet(options.knownCacheSize ?? 10_000);
  // Stored groups, per instance: a connection's chat presence and every chat stream read the
  // group, so opening thousands of connections must not cost a query each. Changes reach every
  // instance through `userChanged`; a read that raced with a change is not cached.
  const groups = boundedMap<string | null>(options.knownCacheSize ?? 10_000);
  let changes = 0;
  const changed = (change: { userId: string; group: string | null }) => {
    changes += 1;
    groups.set(change.userId, change.group);
  };
  options.pubsub.listen(topic('userChanged'), changed);
  const announce = async (user: User) => {
    changed(user);
    await options.pubsub.publish(topic('userChanged'), { userId: user.userId, group: user.group });
  };

  const toUser = (row: { id: string; group: string | null }): User => ({
    userId: row.id,
    group: row.group,
  });

  const authorize = (admin: UserAdmin): void => {
    if (admin && 'secret' in admin) {
      if (!secretMatches(admin.secret, options.serviceSecret)) throw forbidden('Not authorised');
      return;
    }
    if (!admin) throw unauthenticated();
    if (!admin.isService) throw forbidden('Only service callers may create users');
  };

  const parse = (input: UserInput) => ({
    id: checkId(input.userId, 'userId', MAX_ID_LENGTH),
    group:
      input.group === null || input.group === undefined
        ? input.group
        : checkId(input.group, 'group', MAX_GROUP_LENGTH),
  });

  const ensure = async (viewer: Viewer): Promise<void> => {
    if (known.has(viewer.userId)) return;
    await prisma.user.createMany({
      data: [{ id: viewer.userId, group: viewer.group }],
      skipDuplicates: true,
    });
    known.add(viewer.userId);
  };

  return {
    /** Throws unless `admin` may create users (a service token or the right secret). */
    authorize,

    /**
     * Makes sure the viewer is stored, creating it from its token's claims when unknown. No
     * database round trip once this instance has seen the user.
     */
    ensure,

    /** The stored users among `ids` (unknown ids are left out). */
    async find(ids: readonly string[]): Promise<Map<string, User>> {
      const rows = await prisma.user.findMany({
        where: { id: { in: [...new Set(ids)] } },
        select: { id: true, group: true },
      });
      return new Map(rows.map((row) => [row.id, toUser(row)]));
    },

    /** The stored user, creating it from the viewer's token when unknown. */
    async self(viewer: Viewer): Promise<User> {
      const cached = groups.get(viewer.userId);
      if (cached !== undefined) return { userId: viewer.userId, group: cached };
      const before = changes;
      await ensure(viewer);
      const row = await prisma.user.findUnique({
        where: { id: viewer.userId },
        select: { id: true, group: true },
      });
      const user = row ? toUser(row) : { userId: viewer.userId, group: viewer.group };
      if (changes === before) groups.set(user.userId, user.group);
      return user;
    },

    /** Every user of a group, ordered by id. */
    async inGroup(group: string): Promise<User[]> {
      const rows = await prisma.user.findMany({
        where: { group },
        select: { id: true, group: true },
        orderBy: { id: 'asc' },
      });
      return rows.map(toUser);
    },

    /**
     * Creates or updates a user and its group (GraphQL `upsertUser`). Service callers only
     * (FORBIDDEN otherwise); BAD_USER_INPUT on an empty or oversized id or group.
     */
    async upsert(admin: UserAdmin, input: UserInput): Promise<User> {
      authorize(admin);
      const { id, group } = parse(input);
      const row = await prisma.user.upsert({
        where: { id },
        create: { id, group: group ?? null },
        update: group === undefined ? {} : { group },
        select: { id: true, group: true },
      });
      known.add(id);
      const user = toUser(row);
      await announce(user);
      return user;
    },

    /**
     * Creates a user that must not exist yet (chatter's `POST user`): BAD_USER_INPUT "User
     * already exists" otherwise, and nothing changes.
     */
    async create(admin: UserAdmin, input: UserInput): Promise<User> {
      authorize(admin);
      const { id, group } = parse(input);
      const { count } = await prisma.user.createMany({
        data: [{ id, group: group ?? null }],
        skipDuplicates: true,
      });
      if (count === 0) throw badInput('User already exists');
      known.add(id);
      const user = { userId: id, group: group ?? null };
      await announce(user);
      return user;
    },
  };
}

export type Users = ReturnType<typeof createUsers>;
