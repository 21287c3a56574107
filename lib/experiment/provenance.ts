/**
 * Provenance of a run's numbers: which package version, native sources, LibTorch and machine
 * produced them (recorded in summary.json, shown and compared by the report).
 */
import * as os from 'os';
import { backend } from '../binding/backend';
import { nativeSourceHash, packageVersion } from '../util/version';

/** What produced a run's numbers: recorded in summary.json, shown and compared by the report. */
export interface RunProvenance {
  /** fisherlens package version. */
  packageVersion: string;
  /** Prebuilt variant id ('torch1.13-cpu', …) or 'source' for a local build. */
  variant: string;
  /** LibTorch the addon ran on: version, CUDA version (null: CPU-only), folder. */
  libtorch: { version: string; cuda: string | null; path: string };
  /** nativeSourceHash() of the package that ran. */
  nativeSourceHash: string;
  /** Device the run used ('cpu', 'cuda:0', …) and the CPU model of the machine. */
  device: string;
  cpu: string;
  /** Host name (recorded, not compared: sweeps run on many hosts of one kind). */
  host: string;
}

/** The provenance of a run on `device` in this process (loads the addon). */
export function runProvenance(device: string): RunProvenance {
  const b = backend();
  return {
    packageVersion: packageVersion(), variant: b.variant,
    libtorch: { version: b.libtorch.version, cuda: b.libtorch.cuda, path: b.libtorch.path },
    nativeSourceHash: nativeSourceHash(), device, cpu: os.cpus()[0]?.model ?? 'unknown', host: os.hostname(),
  };
}

/** One line naming what produced a run, for reports ('fisherlens 0.1.0 · torch1.13-cpu · LibTorch 1.13.1 · native 1a2b… · cpu (CPU model)'). */
export function provenanceText(p: RunProvenance): string {
  const lt = `LibTorch ${p.libtorch.version}${p.libtorch.cuda ? ` CUDA ${p.libtorch.cuda}` : ''}`;
  return `fisherlens ${p.packageVersion} · ${p.variant} · ${lt} · native ${p.nativeSourceHash.slice(0, 8)} · ${p.device} (${p.cpu})`;
}
