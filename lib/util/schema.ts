/**
 * The option-declaration engine: how an option is declared (type, default, range, allowed values,
 * doc line, unit), its help text, and the one parser ({@link parseOptions}) that checks a user's
 * options against a declaration and fills the defaults. The tables that use it live with their
 * layers (lib/science/options.ts, lib/binding/gradient-engine.ts). Loads nothing native.
 */
import { invalidArgument } from './errors';

/** A scalar an option can hold (tensors travel beside the declared options). */
export type OptionValue = number | boolean | string;

/** One option: its type, default, range or allowed values, and what it means. */
export interface OptionDecl {
  type: 'number' | 'integer' | 'boolean' | 'enum';
  /** Filled in when the option is not given (absent: required, or optional without a default). */
  default?: OptionValue;
  /** An optional option without a default is left out when not given (the op does without). */
  optional?: boolean;
  /** enum: the allowed values. */
  values?: readonly string[];
  /** Inclusive bounds. */
  min?: number;
  max?: number;
  /** Exclusive bounds. */
  above?: number;
  below?: number;
  /** number: +Infinity is allowed (e.g. an unbounded CW-L2 radius). */
  infinite?: boolean;
  /** One line: what it does. */
  doc: string;
  /** Unit of a number (e.g. 'pixel units', 'nats'). */
  unit?: string;
}

/** The options of one op, by name. */
export type OptionSchema = Record<string, OptionDecl>;

/** The parsed options of a schema: every declared key with a default present. */
export type Parsed = Record<string, OptionValue>;

function fmtValue(v: OptionValue): string {
  if (typeof v === 'number' && v === Infinity) return 'unbounded';
  return String(v);
}

/** The range of a number option in words ('' when unbounded): e.g. ">= 0", "in (0, 1]". */
export function rangeText(d: OptionDecl): string {
  const lo = d.min !== undefined ? `[${d.min}` : d.above !== undefined ? `(${d.above}` : undefined;
  const hi = d.max !== undefined ? `${d.max}]` : d.below !== undefined ? `${d.below})` : undefined;
  if (lo && hi) return `in ${lo}, ${hi}`;
  if (lo) return d.min !== undefined ? `>= ${d.min}` : `> ${d.above}`;
  if (hi) return d.max !== undefined ? `<= ${d.max}` : `< ${d.below}`;
  return '';
}

/** Help text of one option: doc, allowed values, range, unit and default, from the declaration. */
export function optionHelp(d: OptionDecl, defaultOverride?: string): string {
  const parts: string[] = [];
  if (d.values) parts.push(d.values.join(' | '));
  const r = rangeText(d);
  if (r) parts.push(d.type === 'integer' ? `integer ${r}` : r);
  if (d.unit) parts.push(d.unit);
  const def = defaultOverride ?? (d.default !== undefined ? fmtValue(d.default) : undefined);
  if (def !== undefined) parts.push(`default ${def}`);
  return parts.length ? `${d.doc} (${parts.join('; ')})` : d.doc;
}

/**
 * Checks one value against a declaration; ERR_ARG naming it `name` (an option of an op, a CLI
 * flag) and saying what the declaration accepts: its values, or its type and range.
 */
export function checkValue(name: string, d: OptionDecl, v: unknown): OptionValue {
  const bad = (expected: string): never => { throw invalidArgument(name, expected, v); };
  switch (d.type) {
    case 'boolean':
      if (typeof v !== 'boolean') bad('true or false');
      return v as boolean;
    case 'enum':
      if (typeof v !== 'string' || !d.values!.includes(v)) bad(`one of ${d.values!.join(', ')}`);
      return v as string;
    case 'number':
    case 'integer': {
      const r = rangeText(d);
      const what = `${d.type === 'integer' ? 'an integer' : d.infinite ? 'a number' : 'a finite number'}${r ? ` ${r}` : ''}`;
      if (typeof v !== 'number' || Number.isNaN(v)) bad(what);
      const x = v as number;
      if (!Number.isFinite(x) && !(d.infinite && x === Infinity)) bad(what);
      if (d.type === 'integer' && !Number.isInteger(x)) bad(what);
      if ((d.min !== undefined && !(x >= d.min)) || (d.max !== undefined && !(x <= d.max))
        || (d.above !== undefined && !(x > d.above)) || (d.below !== undefined && !(x < d.below))) bad(what);
      return x;
    }
  }
}

/** Checks one option of an op against its declaration ({@link checkValue} naming it `<op> option '<key>'`). */
export function checkOption(op: string, key: string, d: OptionDecl, v: unknown): OptionValue {
  return checkValue(`${op} option '${key}'`, d, v);
}

/**
 * Validates `given` against `schema` and fills the defaults (`defaults` overrides declared ones,
 * e.g. an attack kind's own step count). Keys not in the schema are ignored (callers pass wider
 * objects); `undefined` and `null` count as not given. A required option that is missing is ERR_ARG.
 */
export function parseOptions(op: string, schema: OptionSchema, given: object, defaults: Partial<Parsed> = {}): Parsed {
  const g = given as Record<string, unknown>;
  const out: Parsed = {};
  for (const [key, d] of Object.entries(schema)) {
    const v = g[key];
    if (v === undefined || v === null) {
      const def = key in defaults ? defaults[key] : d.default;
      if (def !== undefined) out[key] = def;
      else if (!d.optional) throw invalidArgument(`${op} option '${key}'`, optionHelp(d), v);  // got nothing: it is required
      continue;
    }
    out[key] = checkOption(op, key, d, v);
  }
  return out;
}

/** Whether the user gave `key` (not undefined or null). */
export function given(o: object, key: string): boolean {
  const v = (o as Record<string, unknown>)[key];
  return v !== undefined && v !== null;
}
