import type { Viewer } from '../auth/index.ts';
import type { Database } from '../db/index.ts';
import { badInput, forbidden, unauthenticated } from '../errors.ts';

/** A meeting as clients see it (GraphQL Meeting). */
export interface Meeting {
  id: string;
  applauseEnabled: boolean;
  /** The users admitted to the meeting; null when the meeting is open to everyone. */
  memberIds: string[] | null;
}

/**
 * What `configureMeeting` accepts. An absent field keeps the stored value (defaults for a new
 * meeting: applause enabled, open); `memberIds: null` opens the meeting again.
 */
export interface MeetingInput {
  id: string;
  applauseEnabled?: boolean | null | undefined;
  memberIds?: readonly string[] | null | undefined;
}

/** What a capability may do in a meeting: the settings that apply to one viewer. */
export interface MeetingAccess {
  applauseEnabled: boolean;
}

/** Longest meeting and user id accepted (they are keys in Postgres and Redis). */
const MAX_ID_LENGTH = 200;
/** Largest member list one call may set. */
const MAX_MEMBERS = 100_000;

/** The membership set of users present in a meeting (open notify or applause subscriptions). */
export const meetingPresenceSet = (meetingId: string) => `meeting:${meetingId}`;

/** Checks a meeting id from any client; throws BAD_USER_INPUT. */
export function validMeetingId(meetingId: string): string {
  if (meetingId.trim() === '' || meetingId !== meetingId.trim()) {
    throw badInput('The meeting id must be a non-empty string without surrounding spaces');
  }
  if (meetingId.length > MAX_ID_LENGTH) {
    throw badInput(`The meeting id is longer than ${MAX_ID_LENGTH} characters`);
  }
  return meetingId;
}

/**
 * Meetings (OpenSlides): stored in Postgres so every instance sees the same settings. A meeting
 * with a member list admits only its members (and service callers) to notify, applause and
 * sendApplause; an unknown meeting is open with applause enabled.
 */
export function createMeetings({ db }: { db: Database }) {
  const toMeeting = (row: {
    id: string;
    applauseEnabled: boolean;
    membersOnly: boolean;
    memberIds: string[];
  }): Meeting => ({
    id: row.id,
    applauseEnabled: row.applauseEnabled,
    memberIds: row.membersOnly ? row.memberIds : null,
  });

  return {
    /** Creates or updates a meeting. Service callers only (FORBIDDEN otherwise). */
    async configure(viewer: Viewer | null, input: MeetingInput): Promise<Meeting> {
      if (!viewer) throw unauthenticated();
      if (!viewer.isService) throw forbidden('Only service callers can configure meetings');
      const id = validMeetingId(input.id);
      let members: string[] | null | undefined;
      if (input.memberIds === null) members = null;
      else if (input.memberIds !== undefined) {
        if (input.memberIds.length > MAX_MEMBERS) {
          throw badInput(`A meeting can list at most ${MAX_MEMBERS} members`);
        }
        for (const member of input.memberIds) {
          if (member === '' || member.length > MAX_ID_LENGTH) {
            throw badInput(`Invalid member id: ${JSON.stringify(member.slice(0, 50))}`);
          }
        }
        members = [...new Set(input.memberIds)];
      }
      const applauseEnabled = input.applauseEnabled ?? undefined;
      const membership =
        members === undefined ? {} : { membersOnly: members !== null, memberIds: members ?? [] };
      const row = await db.prisma.meeting.upsert({
        where: { id },
        create: { id, applauseEnabled: applauseEnabled ?? true, ...membership },
        update: { ...(applauseEnabled === undefined ? {} : { applauseEnabled }), ...membership },
      });
      return toMeeting(row);
    },

    /** The stored meeting, or null when it was never configured. */
    async get(meetingId: string): Promise<Meeting | null> {
      const row = await db.prisma.meeting.findUnique({ where: { id: meetingId } });
      return row ? toMeeting(row) : null;
    },

    /**
     * Admits the viewer to a meeting or throws: UNAUTHENTICATED for anonymous callers and
     * FORBIDDEN for non-members of a meeting with a member list (service callers always pass).
     * Anonymous callers pass open meetings only when `allowAnonymous` is set.
     */
    async enter(
      viewer: Viewer | null,
      meetingId: string,
      options: { allowAnonymous?: boolean } = {},
    ): Promise<MeetingAccess> {
      validMeetingId(meetingId);
      const row = await db.prisma.meeting.findUnique({
        where: { id: meetingId },
        select: { applauseEnabled: true, membersOnly: true },
      });
      const access = { applauseEnabled: row?.applauseEnabled ?? true };
      if (!viewer) {
        if (options.allowAnonymous && !row?.membersOnly) return access;
        throw unauthenticated();
      }
      if (!row?.membersOnly || viewer.isService) return access;
      // Only the one id is looked up, not the whole member list.
      const member = await db.prisma.meeting.count({
        where: { id: meetingId, memberIds: { has: viewer.userId } },
      });
      if (member === 0) throw forbidden(`You are not a member of meeting ${meetingId}`);
      return access;
    },
  };
}

export type Meetings = ReturnType<typeof createMeetings>;
