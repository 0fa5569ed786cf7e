import { readFileSync } from 'node:fs';
import {
  buildSchema,
  type GraphQLArgument,
  type GraphQLField,
  type GraphQLInputField,
  type GraphQLNamedType,
  isEnumType,
  isInputObjectType,
  isInterfaceType,
  isObjectType,
  isUnionType,
  lexicographicSortSchema,
  printSchema,
} from 'graphql';
import { describe, expect, it } from 'vitest';
import { schema } from '../src/schema/index.ts';

const printed = readFileSync(new URL('../schema/schema.graphql', import.meta.url), 'utf8');
const contract = buildSchema(
  readFileSync(new URL('../schema/contract.graphql', import.meta.url), 'utf8'),
);
const ours = buildSchema(printed);

const canonical = (s: ReturnType<typeof buildSchema>) => printSchema(lexicographicSortSchema(s));

type AnyField = GraphQLField<unknown, unknown> | GraphQLInputField;
const signature = (field: AnyField) => {
  const args = 'args' in field ? field.args : [];
  return {
    type: String(field.type),
    // Argument order is not part of the contract (the printed schema sorts them).
    args: Object.fromEntries(
      [...args]
        .sort((x, y) => x.name.localeCompare(y.name))
        .map((a: GraphQLArgument) => [a.name, { type: String(a.type), default: a.defaultValue }]),
    ),
  };
};

function fieldsOf(type: GraphQLNamedType): Record<string, AnyField> {
  if (isObjectType(type) || isInterfaceType(type) || isInputObjectType(type))
    return type.getFields();
  return {};
}

describe('schema', () => {
  it('schema/schema.graphql is up to date (run npm run codegen)', () => {
    expect(canonical(ours)).toBe(canonical(schema));
  });

  it('matches the public contract wherever it implements it', () => {
    const mismatches: string[] = [];
    for (const [name, expected] of Object.entries(contract.getTypeMap())) {
      if (name.startsWith('__')) continue;
      const actual = ours.getType(name);
      if (!actual) continue; // a later issue's type
      if (actual.constructor !== expected.constructor) {
        mismatches.push(`${name}: kind differs`);
        continue;
      }
      if (isUnionType(expected) && isUnionType(actual)) {
        const members = (t: typeof expected) =>
          t
            .getTypes()
            .map((m) => m.name)
            .sort();
        if (members(expected).join() !== members(actual).join())
          mismatches.push(`${name}: members differ`);
      }
      if (isEnumType(expected) && isEnumType(actual)) {
        const values = (t: typeof expected) =>
          t
            .getValues()
            .map((v) => v.name)
            .sort();
        if (values(expected).join() !== values(actual).join())
          mismatches.push(`${name}: values differ`);
      }
      const actualFields = fieldsOf(actual);
      for (const [fieldName, field] of Object.entries(fieldsOf(expected))) {
        const mine = actualFields[fieldName];
        if (!mine) {
          // Input types must be complete once they exist: a client may send any of their fields.
          if (isInputObjectType(expected)) mismatches.push(`${name}.${fieldName}: missing`);
          continue;
        }
        const [want, got] = [signature(field), signature(mine)];
        if (JSON.stringify(want) !== JSON.stringify(got)) {
          mismatches.push(
            `${name}.${fieldName}: want ${JSON.stringify(want)}, got ${JSON.stringify(got)}`,
          );
        }
      }
    }
    expect(mismatches).toEqual([]);
  });

  it('implements the foundation part of the contract', () => {
    const has = (type: string, field: string) =>
      Boolean(fieldsOf(ours.getType(type) as GraphQLNamedType)[field]);
    expect(has('Query', 'viewer')).toBe(true);
    expect(has('Mutation', 'publish')).toBe(true);
    expect(has('Subscription', 'notify')).toBe(true);
  });
});
