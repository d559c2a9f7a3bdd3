import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../errors';

/**
 * Node's option parser, with its messages put in the tool's words: Node's own ("Unknown option
 * '--x'. To specify a positional argument starting with a '-', place it at the end ...") is long,
 * speaks of positionals, and quotes unevenly.
 */
export function parseOptions<T extends ParseArgsConfig['options']>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(optionErrorText(err));
  }
}

export function optionErrorText(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const message = String(e?.message ?? err).split('\n')[0] as string;
  const quoted = /'(-[^' ]+)/.exec(message)?.[1];
  if (e?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && quoted) return `unknown option ${quoted}`;
  if (e?.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && quoted) {
    if (/argument missing/.test(message)) return `${quoted} needs a value`;
    if (/does not take an argument/.test(message)) return `${quoted} takes no value`;
  }
  return message;
}

/** True when `args` asks for help (-h or --help before any `--`). */
export function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '-h' || a === '--help') return true;
  }
  return false;
}
