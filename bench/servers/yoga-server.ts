/**
 * "The request reference": a bare graphql-yoga server answering `{ ok }` over HTTP, with yoga's
 * defaults (parse and validation caches) and nothing else: no auth, no plugins, no database.
 * Requests per server CPU-second of Switchboard's HTTP operations are compared with it.
 * Prints `{"msg":"listening","url":...}` when ready; exits when stdin closes.
 */
import { createServer } from 'node:http';
import { createSchema, createYoga } from 'graphql-yoga';

const yoga = createYoga({
  schema: createSchema({
    typeDefs: /* GraphQL */ `
      type Query {
        ok: Boolean!
      }
    `,
    resolvers: { Query: { ok: () => true } },
  }),
  graphiql: false,
  logging: false,
});
const server = createServer(yoga);

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
