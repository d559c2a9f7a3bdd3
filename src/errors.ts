/**
 * The one error class the tool raises on purpose. Its message is written for the analyst:
 * it names the file and what is wrong with it, on one line, and is printed as is.
 * Anything else that escapes is a bug and is reported as one (still on one line).
 */
export class VmssError extends Error {
  constructor(
    message: string,
    /** Process exit status for the CLI: 1 = bad input or environment, 2 = usage. */
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message);
    this.name = 'VmssError';
  }
}

/**
 * An encrypted file that decrypted to something that is not a checkpoint: most likely the key
 * is wrong. A VM folder tells it from a damaged file by whether the key opened any other file.
 */
export class WrongKeyError extends VmssError {
  constructor(
    message: string,
    /** The encrypted file that did not decrypt to a checkpoint. */
    readonly file: string,
  ) {
    super(message);
  }
}

/** A bad command line: the CLI prints the message and the usage, and exits 2. */
export class UsageError extends VmssError {
  constructor(message: string) {
    super(message, 2);
  }
}

/** A one-line description of any thrown value, for logs and the CLI's last-resort handler. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] ?? String(err);
  return String(err).split('\n')[0] ?? 'unknown error';
}
