import { lexicographicSortSchema } from 'graphql';
import { builder } from './builder.ts';
import './viewer.ts';
import './notify.ts';

/** The executable schema; the printed form lives in schema/schema.graphql (npm run codegen). */
export const schema = lexicographicSortSchema(builder.toSchema());
