import { lexicographicSortSchema } from 'graphql';
import { builder } from './builder.ts';
import './viewer.ts';
import './autoupdate.ts';
import './projector.ts';
import './drop-user.ts';
import './notify.ts';
import './users.ts';
import './chat.ts';
import './applause.ts';
import './meetings.ts';
import './presence.ts';
import './sessions.ts';

/** The executable schema; the printed form lives in schema/schema.graphql (npm run codegen). */
export const schema = lexicographicSortSchema(builder.toSchema());
