/**
 * "The baseline": plain graphql-yoga with graphql-ws (useServer) and yoga's default createPubSub,
 * exposing the same `notify` subscription (first a NotifyChannel, then every message with
 * toAll) and `publish` mutation as Switchboard. No auth, no visibility rules.
 * Prints `{"msg":"listening","url":...}` when ready; exits when stdin closes.
 */
import { createServer } from 'node:http';
import { GraphQLScalarType, valueFromASTUntyped } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { createPubSub, createSchema, createYoga } from 'graphql-yoga';
import { WebSocketServer } from 'ws';

interface NotifyMessage {
  senderChannelId: string;
  name: string;
  message: unknown;
  toAll: boolean;
}
type NotifyEvent = { channelId: string } | NotifyMessage;

interface PublishInput {
  channelId: string;
  toAll?: boolean | null;
  name: string;
  message?: unknown;
}

const pubSub = createPubSub<{ notify: [NotifyMessage] }>();
let channels = 0;

const json = new GraphQLScalarType({
  name: 'JSON',
  serialize: (value) => value,
  parseValue: (value) => value,
  parseLiteral: (ast) => valueFromASTUntyped(ast),
});

/** Listens before the channel id goes out, so no message published after it is missed. */
async function* notifyStream(channelId: string): AsyncGenerator<NotifyEvent> {
  const events = pubSub.subscribe('notify')[Symbol.asyncIterator]();
  let next = events.next();
  try {
    yield { channelId };
    for (let result = await next; !result.done; result = await next) {
      next = events.next();
      if (result.value.toAll) yield result.value;
    }
  } finally {
    await events.return?.();
  }
}

const schema = createSchema({
  typeDefs: /* GraphQL */ `
    scalar JSON
    type NotifyChannel { channelId: String! }
    type NotifyMessage { senderChannelId: String! name: String! message: JSON }
    union NotifyEvent = NotifyChannel | NotifyMessage
    input PublishInput { channelId: String! toAll: Boolean name: String! message: JSON }
    type Query { ok: Boolean! }
    type Mutation { publish(input: PublishInput!): Boolean! }
    type Subscription { notify: NotifyEvent! }
  `,
  resolvers: {
    JSON: json,
    NotifyEvent: {
      __resolveType: (event: NotifyEvent) =>
        'channelId' in event ? 'NotifyChannel' : 'NotifyMessage',
    },
    Query: { ok: () => true },
    Mutation: {
      publish: (_root: unknown, { input }: { input: PublishInput }) => {
        pubSub.publish('notify', {
          senderChannelId: input.channelId,
          name: input.name,
          message: input.message ?? null,
          toAll: input.toAll === true,
        });
        return true;
      },
    },
    Subscription: {
      notify: {
        subscribe: () => {
          channels += 1;
          return notifyStream(`baseline:base:${channels}`);
        },
        resolve: (event: NotifyEvent) => event,
      },
    },
  },
});

const yoga = createYoga({ schema, graphiql: false, logging: false });
const server = createServer(yoga);
const wss = new WebSocketServer({ server, path: yoga.graphqlEndpoint });

// The graphql-ws recipe from the yoga documentation: every operation goes through yoga's envelop.
useServer(
  {
    execute: (args) => (args.rootValue as EnvelopedRoot).execute(args),
    subscribe: (args) => (args.rootValue as EnvelopedRoot).subscribe(args),
    onSubscribe: async (ctx, _id, params) => {
      const enveloped = yoga.getEnveloped({
        ...ctx,
        req: ctx.extra.request,
        socket: ctx.extra.socket,
        params,
      });
      const args = {
        schema: enveloped.schema,
        operationName: params.operationName ?? null,
        document: enveloped.parse(params.query),
        variableValues: params.variables ?? null,
        contextValue: await enveloped.contextFactory(),
        rootValue: { execute: enveloped.execute, subscribe: enveloped.subscribe },
      };
      const errors = enveloped.validate(args.schema, args.document);
      return errors.length > 0 ? errors : args;
    },
  },
  wss,
);

interface EnvelopedRoot {
  execute: (args: unknown) => ReturnType<NonNullable<Parameters<typeof useServer>[0]['execute']>>;
  subscribe: (
    args: unknown,
  ) => ReturnType<NonNullable<Parameters<typeof useServer>[0]['subscribe']>>;
}

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(
    `${JSON.stringify({ msg: 'listening', url: `http://127.0.0.1:${port}` })}\n`,
  );
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
