import { Keyring } from '../crypto/keyring';

/** The key options every command takes. */
export const KEY_OPTIONS = {
  'password-file': { type: 'string' },
  key: { type: 'string' },
  vmx: { type: 'string' },
} as const;

/** A keyring from the key options; a terminal is asked only when the snapshot turns out encrypted. */
export function keyringFrom(values: { 'password-file'?: string; key?: string; vmx?: string }): Keyring {
  return new Keyring({ passwordFile: values['password-file'], key: values.key, vmx: values.vmx, prompt: true });
}
