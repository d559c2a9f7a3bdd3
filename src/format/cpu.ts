/**
 * The vCPU state a memory image carries, whatever format it came from: what physmem.elf's
 * NT_PRSTATUS notes and metadata.json need. Checkpoints (format/cpustate.ts) and ESXi guest
 * dumps (format/guestdump.ts) each fill it from their own layout.
 */

/** Linux's x86-64 struct user_regs_struct (asm/user_64.h), in order: NT_PRSTATUS's pr_reg. */
export const USER_REGS = [
  'r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rax', 'rcx', 'rdx', 'rsi', 'rdi',
  'orig_rax', 'rip', 'cs', 'eflags', 'rsp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs',
] as const;
export type RegName = (typeof USER_REGS)[number];

/** Registers outside user_regs_struct that a format may give: control and descriptor-table registers. */
export const SYSTEM_REGS = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'gdtr_base', 'gdtr_limit', 'idtr_base', 'idtr_limit'] as const;
export type SystemRegName = (typeof SYSTEM_REGS)[number];

/** What Linux stores in orig_rax outside a system call, so gdb never tries a syscall restart. */
export const NOT_IN_SYSCALL = 0xffffffffffffffffn;

export interface VcpuState {
  /** The vCPU's number in its source (0-based). */
  index: number;
  /** Every user_regs_struct register the source gave; absent ones are listed in `missing`. */
  regs: Map<RegName, bigint>;
  system: Map<SystemRegName, bigint>;
  /** Where the source should have held a user register and did not (tag names, fields). */
  missing: string[];
}

export interface CpuState {
  /** x86_64: NT_PRSTATUS notes per vCPU. aarch64: memory only, CPU state not described. */
  arch: 'x86_64' | 'aarch64';
  vcpus: VcpuState[];
  /** What reading the state found worth telling (a damaged count, an undescribed architecture). */
  notes: string[];
  /** What held the state, for messages: "the checkpoint", "the guest dump". */
  source: string;
}

/** The JSON form of one vCPU: registers as 0x-hex strings (u64 values do not fit a JSON number). */
export function vcpuJson(v: VcpuState): { index: number; registers: Record<string, string>; missing: string[] } {
  const registers: Record<string, string> = {};
  for (const name of USER_REGS) {
    const val = v.regs.get(name);
    if (val !== undefined) registers[name] = '0x' + val.toString(16);
  }
  for (const [name, val] of v.system) registers[name] = '0x' + val.toString(16);
  return { index: v.index, registers, missing: v.missing };
}
