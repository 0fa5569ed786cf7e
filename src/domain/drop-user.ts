import { randomUUID } from 'node:crypto';
import type { Viewer } from '../auth/index.ts';
import { badInput, forbidden, unauthenticated } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { PubSub } from '../pubsub/index.ts';
import type { ConnectionRegistry } from './connections.ts';
import { topic } from './events.ts';
import type { Membership } from './membership.ts';

/** The membership set every live instance joins with its instance id. */
export const INSTANCES_SET = 'instances';

export interface DropUserOptions {
  pubsub: PubSub;
  membership: Membership;
  connections: ConnectionRegistry;
  instanceId: string;
  /** How long a request waits for the other instances' answers. */
  timeoutMs: number;
  logger: Logger;
}

interface Pending {
  expected: number;
  closed: number;
  answered: Set<string>;
  done: () => void;
}

/**
 * dropUser across instances: a command goes to every instance, each closes its local
 * connections of the user (every transport closes the way its protocol does: graphql-ws with
 * 4403 "dropped", SSE streams end, legacy sockets per their protocol) and answers with its
 * count on the requester's reply topic. The requester waits for as many answers as there are
 * live instances (the `instances` membership set), at most `timeoutMs`.
 */
export function createDropUser(options: DropUserOptions) {
  const { pubsub, membership, connections, instanceId, logger } = options;
  const pending = new Map<string, Pending>();

  const stopCommands = pubsub.listen(topic('dropUser'), (command) => {
    const closed = connections.drop(command.userId);
    if (closed > 0) logger.info({ user: command.userId, closed }, 'user dropped');
    pubsub
      .publish(topic('dropUserReply', command.requesterId), {
        requestId: command.requestId,
        instanceId,
        closed,
      })
      .catch((error: unknown) => logger.warn({ err: error }, 'dropUser reply failed'));
  });
  const stopReplies = pubsub.listen(topic('dropUserReply', instanceId), (reply) => {
    const request = pending.get(reply.requestId);
    if (!request || request.answered.has(reply.instanceId)) return;
    request.answered.add(reply.instanceId);
    request.closed += reply.closed;
    if (request.answered.size >= request.expected) request.done();
  });

  return {
    /**
     * Closes every connection of `userId` on every instance (service callers only) and
     * resolves how many were closed. Instances that do not answer within the timeout are not
     * counted (their connections are still closed when the command reaches them).
     */
    async drop(viewer: Viewer | null, userId: string, reason?: string | null): Promise<number> {
      if (!viewer) throw unauthenticated();
      if (!viewer.isService) throw forbidden('dropUser is for service callers only');
      if (typeof userId !== 'string' || userId.trim() === '') {
        throw badInput('userId must not be empty');
      }
      const expected = Math.max(1, (await membership.members(INSTANCES_SET)).length);
      const requestId = randomUUID();
      let timer: NodeJS.Timeout | undefined;
      const request: Pending = { expected, closed: 0, answered: new Set(), done: () => {} };
      const finished = new Promise<void>((resolve) => {
        request.done = resolve;
        timer = setTimeout(resolve, options.timeoutMs);
        timer.unref();
      });
      pending.set(requestId, request);
      try {
        await pubsub.publish(topic('dropUser'), {
          requestId,
          requesterId: instanceId,
          userId,
          reason: reason ?? null,
        });
        await finished;
      } finally {
        clearTimeout(timer);
        pending.delete(requestId);
      }
      if (request.answered.size < expected) {
        logger.warn(
          { user: userId, answered: request.answered.size, expected },
          'dropUser: some instances did not answer in time',
        );
      }
      logger.info({ user: userId, reason, closed: request.closed }, 'dropUser done');
      return request.closed;
    },

    stop(): void {
      stopCommands();
      stopReplies();
      for (const request of pending.values()) request.done();
    },
  };
}

export type DropUser = ReturnType<typeof createDropUser>;
