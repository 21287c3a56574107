/**
 * Config errors: zod issues as one line each, `path: what was expected, what came`, naming the
 * allowed keys or values (ERR_CONFIG for configs, ERR_ARG for CLI flags checked through the same
 * schemas, lib/experiment/config.ts).
 */
import { z } from 'zod';
import { FisherLensError, invalidArgument, show } from '../util/errors';

export function fmtPath(p: (string | number)[]): string {
  let s = '';
  for (const k of p) {
    if (typeof k === 'number') s += `[${k}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(k)) s += s ? `.${k}` : k;
    else s += `[${JSON.stringify(k)}]`;
  }
  return s || '(top level)';
}

export function valueAt(root: unknown, p: (string | number)[]): unknown {
  let cur: unknown = root;
  for (const k of p) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[k];
  }
  return cur;
}

/** What a zod issue says was expected, in words ('one of a | b', 'a number ≥ 0', 'at least 1 item(s)'); undefined for issues that are not about one value. */
function issueExpected(issue: z.ZodIssue): string | undefined {
  switch (issue.code) {
    case 'invalid_enum_value':
      return `one of ${issue.options.join(' | ')}`;
    case 'invalid_union_discriminator':
      return `one of ${issue.options.map(String).join(' | ')}`;
    case 'invalid_type':
      return issue.expected;
    case 'too_small':
      return issue.type === 'array' ? `at least ${issue.minimum} item(s)` : `a number ${issue.inclusive ? '≥' : '>'} ${issue.minimum}`;
    case 'too_big':
      return `a number ${issue.inclusive ? '≤' : '<'} ${issue.maximum}`;
    default:
      return undefined;
  }
}

/** One zod issue as a line: what was expected, what came. */
export function issueMessage(issue: z.ZodIssue, input: unknown): string {
  const got = valueAt(input, issue.path);
  const expected = issueExpected(issue);
  switch (issue.code) {
    case 'invalid_enum_value':
      return `expected ${expected}, got ${show(issue.received)}`;
    case 'invalid_type':
      if (issue.received === 'undefined') return `required (expected ${expected})`;
      return `expected ${expected}, got ${issue.received} ${show(got)}`;
    case 'unrecognized_keys':
      return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
    case 'too_small':
      if (issue.type === 'array') return `expected ${expected}, got ${Array.isArray(got) ? got.length : show(got)}`;
      return `expected ${expected}, got ${show(got)}`;
    default:
      if (expected !== undefined) return `expected ${expected}, got ${show(got)}`;
      return `${issue.message}${got !== undefined ? `, got ${show(got)}` : ''}`;
  }
}

/** Keys allowed by a zod object schema (unwrapping defaults/optionals/effects). */
function objectKeys(schema: z.ZodTypeAny): string[] | null {
  let s: z.ZodTypeAny = schema;
  for (;;) {
    if (s instanceof z.ZodDefault) s = s._def.innerType;
    else if (s instanceof z.ZodOptional) s = s._def.innerType;
    else if (s instanceof z.ZodEffects) s = s._def.schema;
    else break;
  }
  return s instanceof z.ZodObject ? Object.keys(s.shape as Record<string, unknown>) : null;
}

export function formatIssues(error: z.ZodError, input: unknown, prefix: (string | number)[], schema: z.ZodTypeAny, suffix = ''): string {
  const lines = error.issues.map((issue) => {
    let msg = issueMessage(issue, input);
    if (issue.code === 'unrecognized_keys') {
      const sub = schemaAt(schema, issue.path);
      const keys = sub ? objectKeys(sub) : null;
      if (keys) msg += `; allowed: ${keys.join(', ')}`;
    }
    return `${fmtPath([...prefix, ...issue.path])}: ${msg}${suffix}`;
  });
  return lines.join('; ');
}

/** The sub-schema at a path of an object schema (best effort; null when unknown). */
function schemaAt(schema: z.ZodTypeAny, p: (string | number)[]): z.ZodTypeAny | null {
  let s: z.ZodTypeAny | null = schema;
  for (const k of p) {
    if (!s) return null;
    for (;;) {
      if (s instanceof z.ZodDefault) s = s._def.innerType;
      else if (s instanceof z.ZodOptional) s = s._def.innerType;
      else if (s instanceof z.ZodEffects) s = s._def.schema;
      else break;
    }
    if (s instanceof z.ZodObject && typeof k === 'string') s = (s.shape as Record<string, z.ZodTypeAny>)[k] ?? null;
    else if (s instanceof z.ZodArray && typeof k === 'number') s = s._def.type;
    else return null;
  }
  return s;
}

export function configError(message: string, file?: string): FisherLensError {
  return new FisherLensError('ERR_CONFIG', file ? `${file}: ${message}` : message);
}

/**
 * Checks one value against a field of the schemas above and returns it, or ERR_ARG naming `label`
 * (a CLI flag): the CLI validates its flags through the same declarations as configs.
 */
export function checkField<T>(schema: z.ZodType<T>, value: unknown, label: string): T {
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw invalidArgument(label, issueExpected(issue) ?? issue.message, valueAt(value, issue.path));
  }
  return r.data;
}

