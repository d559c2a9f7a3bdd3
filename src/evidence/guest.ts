import * as path from 'node:path';
import { vcpuJson, type CpuState } from '../format/cpu';
import { VmssError } from '../errors';
import type { Evidence, PhysMem } from './evidence';
import { guestCpuState, guestRuns, readGuestDump, RELEASE, type GuestDump } from '../format/guestdump';
import { hex } from '../format/integers';
import { SourceFile } from '../io/source';
import { missingRanges } from '../format/regions';
import { SegmentMap } from '../tree/segments';
import { wholeDoc } from './textdoc';

const PAGE = 4096;

export interface GuestOpenOptions {
  /** The memory file, when it is not the dump's sibling (debug.guest -> debug.vmem). */
  vmem?: string;
}

/** An ESXi guest dump opened for serving: its header, and its memory when debug.vmem pairs with it. */
export interface GuestDumpEvidence extends Evidence {
  dump: GuestDump;
}

/** debug.guest -> debug.vmem: crash pairs them by replacing the name's "guest" ending. */
export function guestSibling(file: string): string {
  return file.replace(/guest$/i, 'vmem');
}

/**
 * Open `file` as an ESXi guest dump. Throws NotGuestDump (from the format layer) when a check
 * fails, VmssError when the file cannot be opened. The memory file is paired and checked here:
 * its size must be the dump's memory size (a shorter one is a truncated copy, served and named).
 */
export function openGuestDump(file: string, opts: GuestOpenOptions = {}): GuestDumpEvidence {
  const metaFile = SourceFile.open(file);
  let memFile: SourceFile | null = null;
  try {
    const dump = readGuestDump(metaFile);
    const warnings: string[] = [];
    let physmem: PhysMem | null = null;
    let physmemError: string | null = null;
    const vmemPath = opts.vmem ?? guestSibling(file);
    const memBytes = dump.memoryPages * PAGE;
    try {
      memFile = SourceFile.open(vmemPath);
    } catch (err) {
      physmemError = opts.vmem !== undefined
        ? `memory file ${err instanceof VmssError ? err.message : vmemPath}`
        : `no memory found: ${path.basename(vmemPath)} is not beside ${path.basename(file)}; give the memory file with --vmem FILE`;
    }
    if (memFile && memFile.size > memBytes) {
      physmemError = `${memFile.name} holds ${memFile.size} bytes, but ${path.basename(file)} describes ${memBytes} bytes of memory: not this dump's memory file (give the right one with --vmem FILE)`;
      memFile.close();
      memFile = null;
    }
    const runs = guestRuns(dump);
    if (memFile && runs.length === 0) {
      physmemError = `${path.basename(file)} describes no memory (0 pages outside its holes)`;
      memFile.close();
      memFile = null;
    }
    if (memFile) {
      const map = new SegmentMap(runs);
      physmem = { size: map.end, map, file: memFile };
      for (const m of missingRanges(map.segments, memFile.size)) {
        warnings.push(`guest-physical ${hex(m.start)}-${hex(m.start + m.length)} (${m.length} bytes) lies beyond the end of ${memFile.name} (${memFile.size} bytes): truncated copy; it reads as zeros`);
      }
    }
    let cpu: CpuState | null = null;
    const cpuState = (): CpuState => (cpu ??= guestCpuState(dump, metaFile));
    const ev: GuestDumpEvidence = {
      dump, metaFile, memoryPath: physmem ? vmemPath : null, physmem, physmemError, warnings, checkpoint: null, cpuState,
      infoText: (shown) => guestInfoText(ev, shown),
      infoJsonText: (shown) => JSON.stringify(guestInfoJson(ev, shown), null, 2) + '\n',
      // A guest dump's texts are short: one unit each.
      infoTextDoc: (shown) => wholeDoc(ev.infoText(shown)),
      infoJsonDoc: (shown) => wholeDoc(ev.infoJsonText(shown)),
      close: () => {
        metaFile.close();
        memFile?.close();
      },
    };
    return ev;
  } catch (err) {
    metaFile.close();
    memFile?.close();
    throw err;
  }
}

function runsJson(ev: Evidence): { size: number; runs: { physAddr: number; fileOffset: number; length: number; file: string }[] } | null {
  const pm = ev.physmem;
  return pm && { size: pm.size, runs: pm.map.segments.map((r) => ({ physAddr: r.start, fileOffset: r.fileOffset, length: r.length, file: pm.file.name })) };
}

/** metadata.json of a guest dump: what the header says, the runs, and every vCPU's registers. */
export function guestInfoJson(ev: GuestDumpEvidence, warnings: readonly string[]) {
  const d = ev.dump;
  return {
    file: d.file,
    format: 'esxi-guest-dump',
    version: d.version,
    release: RELEASE.get(d.version) ?? null,
    arch: d.arch,
    vcpuCount: d.vcpuCount,
    lastAddr: d.lastAddr,
    memoryPages: d.memoryPages,
    holes: d.holes,
    memoryFile: ev.memoryPath,
    physmem: runsJson(ev),
    physmemError: ev.physmemError,
    warnings: [...warnings],
    vcpus: ev.cpuState().vcpus.map(vcpuJson),
  };
}

/** info.txt of a guest dump: the header in words, the run table vmwareinfo would print, registers, warnings. */
export function guestInfoText(ev: GuestDumpEvidence, warnings: readonly string[]): string {
  const d = ev.dump;
  const out: string[] = [];
  out.push(`ESXi guest dump: ${d.file} (${d.fileSize} bytes)`);
  out.push(`Header version: ${d.version} (${RELEASE.get(d.version) ?? 'unknown release'})`);
  out.push(`CPU architecture: ${d.arch === 'x86_64' ? 'x86-64' : 'AArch64'}`);
  out.push(`vCPUs: ${d.vcpuCount}`);
  out.push(`Memory: ${d.memoryPages} pages (${hex(d.memoryPages * PAGE)} bytes) stored, last address ${hex(d.lastAddr)}`);
  for (const h of d.holes) out.push(`Hole: guest-physical ${hex(h.ppn * PAGE)}-${hex((h.ppn + h.pages) * PAGE)} (${h.pages} pages, not stored)`);
  out.push('');
  out.push('File Offset PhysMem Offset Size      ');
  out.push('----------- -------------- ----------');
  for (const r of ev.physmem?.map.segments ?? []) out.push(`${hex(r.fileOffset, 9)} ${hex(r.start, 12)} ${hex(r.length, 8)}`);
  out.push('');
  for (const v of ev.cpuState().vcpus) {
    const reg = (name: 'rip' | 'rsp' | 'eflags'): string => hex(v.regs.get(name) ?? 0n);
    out.push(`vCPU ${v.index}: rip ${reg('rip')} rsp ${reg('rsp')} rflags ${reg('eflags')} cr3 ${hex(v.system.get('cr3') ?? 0n)}`);
  }
  out.push('');
  if (ev.physmem) {
    out.push(`Memory file: ${ev.physmem.file.name}`);
    out.push(`Physical memory: ${hex(ev.physmem.size)} bytes in ${ev.physmem.map.segments.length} runs`);
  } else {
    out.push(`Physical memory: not served: ${ev.physmemError ?? 'unknown reason'}`);
  }
  for (const w of warnings) out.push(`WARNING: ${w}`);
  return out.join('\n') + '\n';
}
