import { Keyring } from '../crypto/keyring';
import { UsageError } from '../errors';

/** The key options every command takes. */
export const KEY_OPTIONS = {
  'password-file': { type: 'string' },
  key: { type: 'string' },
  'key-file': { type: 'string' },
  vmx: { type: 'string' },
} as const;

/** A keyring from the key options; a terminal is asked only when the snapshot turns out encrypted. */
export function keyringFrom(values: { 'password-file'?: string; key?: string; 'key-file'?: string; vmx?: string }): Keyring {
  if (values.key !== undefined && values['key-file'] !== undefined) throw new UsageError('--key and --key-file both give the data file key: give one');
  return new Keyring({ passwordFile: values['password-file'], key: values.key, keyFile: values['key-file'], vmx: values.vmx, prompt: true });
}
