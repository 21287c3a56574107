/**
 * TensorBoard event files: the format only. An event file is a TFRecord stream of `Event`
 * protobufs (per record: uint64le length, masked CRC-32C of the length, the bytes, masked CRC-32C
 * of the bytes). The messages are encoded by protobufjs from the definitions below, written here
 * from the field numbers TensorBoard publishes (tensorboard/compat/proto/event.proto,
 * summary.proto, histogram.proto, tensor.proto, tensor_shape.proto, plugins/hparams/api.proto and
 * plugin_data.proto, google/protobuf/struct.proto); CRC-32C is the crc-32 package's. We write, and
 * never read: TensorBoard's own reader checks what we write (test/tensorboard.test.ts).
 *
 * Events are buffered in memory and appended to the file at {@link EventWriter.flush} (training
 * flushes at each epoch end and before each checkpoint), so a crash loses at most the events since
 * the last flush; a record torn by a crash is the file's last and TensorBoard's reader skips it.
 * Logging never stops the caller: the first failure to create or write the file (an unwritable
 * folder, a full disk) prints one warning, and the writer drops every later event.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type * as protobuf from 'protobufjs';
// eslint-disable-next-line @typescript-eslint/no-var-requires
const CRC32C = require('crc-32/crc32c') as { buf(data: Uint8Array, seed?: number): number };

/** The protobuf messages we write, with TensorBoard's published field numbers. */
const PROTO = `
syntax = "proto3";
package fisherlens.tb;

message Event {
  double wall_time = 1;
  int64 step = 2;
  oneof what {
    string file_version = 3;
    Summary summary = 5;
    SessionLog session_log = 7;
  }
}
message SessionLog {
  enum SessionStatus { STATUS_UNSPECIFIED = 0; START = 1; STOP = 2; CHECKPOINT = 3; }
  SessionStatus status = 1;
  string checkpoint_path = 2;
  string msg = 3;
}
message Summary {
  message Image {
    int32 height = 1;
    int32 width = 2;
    int32 colorspace = 3;
    bytes encoded_image_string = 4;
  }
  message Value {
    string tag = 1;
    SummaryMetadata metadata = 9;
    oneof value {
      float simple_value = 2;
      Image image = 4;
      HistogramProto histo = 5;
      TensorProto tensor = 8;
    }
  }
  repeated Value value = 1;
}
message SummaryMetadata {
  message PluginData {
    string plugin_name = 1;
    bytes content = 2;
  }
  PluginData plugin_data = 1;
  string display_name = 2;
  string summary_description = 3;
  int32 data_class = 4;
}
message HistogramProto {
  double min = 1;
  double max = 2;
  double num = 3;
  double sum = 4;
  double sum_squares = 5;
  repeated double bucket_limit = 6 [packed = true];
  repeated double bucket = 7 [packed = true];
}
message TensorShapeProto {
  message Dim { int64 size = 1; string name = 2; }
  repeated Dim dim = 2;
  bool unknown_rank = 3;
}
message TensorProto {
  int32 dtype = 1;
  TensorShapeProto tensor_shape = 2;
  repeated bytes string_val = 8;
}
message HParamsPluginData {
  int32 version = 1;
  oneof data {
    SessionStartInfo session_start_info = 3;
    SessionEndInfo session_end_info = 4;
  }
}
message SessionStartInfo {
  map<string, StructValue> hparams = 1;
  string model_uri = 2;
  string monitor_url = 3;
  string group_name = 4;
  double start_time_secs = 5;
}
message SessionEndInfo {
  int32 status = 1;
  double end_time_secs = 2;
}
message StructValue {
  oneof kind {
    double number_value = 2;
    string string_value = 3;
    bool bool_value = 4;
  }
}
`;

let types: { Event: protobuf.Type; HParamsPluginData: protobuf.Type } | undefined;
function proto(): NonNullable<typeof types> {
  if (!types) {
    // loaded here, on the first event written: every process that imports training (the CLI's
    // start included) would otherwise pay protobufjs's ~17 ms load
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const pb = require('protobufjs') as typeof protobuf;
    const root = pb.parse(PROTO, { keepCase: true }).root;
    types = { Event: root.lookupType('fisherlens.tb.Event'), HParamsPluginData: root.lookupType('fisherlens.tb.HParamsPluginData') };
  }
  return types;
}

/** TensorFlow's DataType of a string tensor (types.proto DT_STRING). */
const DT_STRING = 7;
/** SessionLog.SessionStatus START; hparams api.proto Status STATUS_SUCCESS. */
const SESSION_START = 1;
const STATUS_SUCCESS = 1;

/** The TFRecord mask of a CRC-32C: rotate right by 15 bits, add 0xa282ead8 (mod 2³²). */
function maskedCrc(data: Uint8Array): number {
  const c = CRC32C.buf(data) >>> 0;
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: length (uint64le), its masked CRC, the data, its masked CRC. */
export function tfRecord(data: Uint8Array): Buffer {
  const out = Buffer.alloc(data.length + 16);
  out.writeBigUInt64LE(BigInt(data.length), 0);
  out.writeUInt32LE(maskedCrc(out.subarray(0, 8)), 8);
  out.set(data, 12);
  out.writeUInt32LE(maskedCrc(data), 12 + data.length);
  return out;
}

/** A hyperparameter value as the HParams dashboard shows it. */
export type HParamValue = number | string | boolean;

export interface EventWriterOptions {
  /** Where the one warning goes [stderr, prefixed 'warning: ']. */
  onWarning?: (message: string) => void;
  /** Appended to the file name (events.out.tfevents.<s>.<host>.<pid>.<n><suffix>). */
  suffix?: string;
}

let fileCounter = 0;

/**
 * Writes one event file into a folder (created when missing). Steps are integers (epoch or batch
 * numbers); wall times are seconds since the Unix epoch. Nothing reaches the disk before
 * {@link flush}; after a failure every call is a no-op.
 */
export class EventWriter {
  /** The event file (undefined once the writer failed or when it never opened). */
  readonly file: string | undefined;
  private fd: number | undefined;
  private pending: Buffer[] = [];
  private failed = false;
  private readonly warn: (m: string) => void;
  /** Bytes appended so far and milliseconds spent encoding and writing (for the speed figures). */
  bytes = 0;
  ms = 0;

  constructor(readonly dir: string, opts: EventWriterOptions = {}) {
    this.warn = opts.onWarning ?? ((m) => process.stderr.write(`warning: ${m}\n`));
    const t0 = performance.now();
    const name = `events.out.tfevents.${Math.floor(Date.now() / 1000).toString().padStart(10, '0')}.${os.hostname()}.${process.pid}.${fileCounter++}${opts.suffix ?? ''}`;
    try {
      fs.mkdirSync(dir, { recursive: true });
      this.fd = fs.openSync(path.join(dir, name), 'a');
      this.file = path.join(dir, name);
    } catch (e) {
      this.fail(e);
    }
    this.event({ file_version: 'brain.Event:2' }, 0);
    this.flush();
    this.ms += performance.now() - t0;
  }

  /** False after a failure: the events are being dropped. */
  get ok(): boolean { return !this.failed; }

  private fail(e: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.pending = [];
    this.warn(`TensorBoard events in ${this.dir} stopped (${(e as Error).message}); training goes on and its other outputs are unaffected`);
    if (this.fd !== undefined) {
      try { fs.closeSync(this.fd); } catch { /* already gone */ }
      this.fd = undefined;
    }
  }

  private event(what: Record<string, unknown>, step: number, wallTime = Date.now() / 1000): void {
    if (this.failed) return;
    const t0 = performance.now();
    const { Event } = proto();
    this.pending.push(tfRecord(Event.encode(Event.fromObject({ wall_time: wallTime, step, ...what })).finish()));
    this.ms += performance.now() - t0;
  }

  private values(step: number, values: Record<string, unknown>[], wallTime?: number): void {
    this.event({ summary: { value: values } }, step, wallTime);
  }

  /** Scalars at one step: tag → value (a float32 each; non-finite values are written as they are). */
  scalars(step: number, values: Record<string, number>, wallTime?: number): void {
    const v = Object.entries(values).map(([tag, x]) => ({ tag, simple_value: x }));
    if (v.length > 0) this.values(step, v, wallTime);
  }

  /**
   * A histogram of `values` (non-finite ones left out) in `buckets` equal-width buckets over
   * [min, max]; `num` is the count of finite values.
   */
  histogram(tag: string, step: number, values: ArrayLike<number>, buckets = 30, wallTime?: number): void {
    const xs = Array.from(values).filter(Number.isFinite);
    if (xs.length === 0) return;
    let min = Infinity, max = -Infinity, sum = 0, sumSq = 0;
    for (const x of xs) { min = Math.min(min, x); max = Math.max(max, x); sum += x; sumSq += x * x; }
    const n = min === max ? 1 : buckets;
    const width = (max - min) / n;
    const limits = Array.from({ length: n }, (_, i) => (i === n - 1 ? max : min + (i + 1) * width));
    const counts = new Array<number>(n).fill(0);
    for (const x of xs) counts[Math.min(n - 1, width > 0 ? Math.floor((x - min) / width) : 0)]++;
    this.values(step, [{ tag, histo: { min, max, num: xs.length, sum, sum_squares: sumSq, bucket_limit: limits, bucket: counts } }], wallTime);
  }

  /** An encoded image (PNG bytes) of height × width pixels with `channels` (1 grey, 3 RGB, 4 RGBA). */
  image(tag: string, step: number, png: Uint8Array, height: number, width: number, channels: number, wallTime?: number): void {
    this.values(step, [{ tag, image: { height, width, colorspace: channels, encoded_image_string: png } }], wallTime);
  }

  /** Markdown text (the text plugin: a string tensor). */
  text(tag: string, step: number, markdown: string, wallTime?: number): void {
    this.values(step, [{
      tag, metadata: { plugin_data: { plugin_name: 'text' } },
      tensor: { dtype: DT_STRING, tensor_shape: {}, string_val: [Buffer.from(markdown, 'utf8')] },
    }], wallTime);
  }

  /** SessionLog START at `step`: TensorBoard drops this run's events at steps ≥ step written before (the orphans of a crash). */
  sessionStart(step: number): void {
    this.event({ session_log: { status: SESSION_START } }, step);
  }

  /** The HParams plugin's session start: the hyperparameters of this run (its folder is the session). */
  hparams(values: Record<string, HParamValue>, opts: { group?: string; startTime?: number } = {}): void {
    const hp = Object.fromEntries(Object.entries(values).map(([k, v]) => [k,
      typeof v === 'number' ? { number_value: v } : typeof v === 'boolean' ? { bool_value: v } : { string_value: v }]));
    this.hparamsValue('_hparams_/session_start_info', {
      session_start_info: { hparams: hp, group_name: opts.group ?? '', start_time_secs: opts.startTime ?? Date.now() / 1000 },
    });
  }

  /** The HParams plugin's session end (status success). */
  hparamsEnd(endTime = Date.now() / 1000): void {
    this.hparamsValue('_hparams_/session_end_info', { session_end_info: { status: STATUS_SUCCESS, end_time_secs: endTime } });
  }

  private hparamsValue(tag: string, data: Record<string, unknown>): void {
    if (this.failed) return;
    const { HParamsPluginData } = proto();
    const content = HParamsPluginData.encode(HParamsPluginData.fromObject({ version: 0, ...data })).finish();
    this.values(0, [{ tag, metadata: { plugin_data: { plugin_name: 'hparams', content } } }]);
  }

  /** Appends the buffered events to the file (one write). */
  flush(): void {
    if (this.failed || this.pending.length === 0) return;
    if (this.fd === undefined) return;
    const t0 = performance.now();
    const data = Buffer.concat(this.pending);
    this.pending = [];
    try {
      let off = 0;
      while (off < data.length) off += fs.writeSync(this.fd, data, off);
      this.bytes += data.length;
    } catch (e) {
      this.fail(e);
    }
    this.ms += performance.now() - t0;
  }

  /** Flushes and closes the file. */
  close(): void {
    this.flush();
    if (this.fd !== undefined) {
      try { fs.closeSync(this.fd); } catch { /* nothing to keep */ }
      this.fd = undefined;
    }
    this.failed = true;
  }
}
