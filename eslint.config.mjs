// Flat config: typescript-eslint's recommended rules over src, scripts and test, and the layer
// rules that keep src/ the data's path (no import cycle; no import from a layer above).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { importX, createNodeResolver } from 'eslint-plugin-import-x';

// src/'s layers, lowest first. A layer imports only from layers below it (and errors.ts). The
// exceptions are leaves with no import from src/: cache/budget.ts (the decoding layers in io/
// draw on the one budget), tree/segments.ts (evidence/ maps guest memory with SegmentMap) and
// format/dictionary.ts (crypto/ reads the key safe from the .vmx's `key = "value"` lines).
const LAYERS = ['io', 'crypto', 'format', 'evidence', 'cache', 'tree', 'target', 'fuse', 'mount', 'commands', 'cli'];
const ABOVE = {
  io: ['crypto', 'format', 'evidence', 'cache', 'tree', 'target', 'fuse', 'mount', 'commands', 'cli'],
  crypto: ['format', 'evidence', 'cache', 'tree', 'target', 'fuse', 'mount', 'commands', 'cli'],
  format: ['crypto', 'evidence', 'cache', 'tree', 'target', 'fuse', 'mount', 'commands', 'cli'],
  evidence: ['cache', 'tree', 'target', 'fuse', 'mount', 'commands', 'cli'],
  cache: ['crypto', 'format', 'evidence', 'tree', 'target', 'fuse', 'mount', 'commands', 'cli'],
  tree: ['target', 'fuse', 'mount', 'commands', 'cli'],
  target: ['fuse', 'mount', 'commands', 'cli'],
  fuse: ['target', 'mount', 'commands', 'cli'],
  mount: ['commands', 'cli'],
  commands: ['fuse', 'mount', 'cli'],
  cli: [],
};
// Leaves a lower layer may import, by the layer they sit in.
const ALLOWED = {
  format: ['./dictionary.ts'],
  cache: ['./budget.ts'],
  tree: ['./segments.ts'],
};
const zones = LAYERS.flatMap((layer) =>
  ABOVE[layer].map((above) => ({
    target: `./src/${layer}`,
    from: `./src/${above}`,
    except: ALLOWED[above] ?? [],
    message: `src/${layer}/ sits below src/${above}/ and must not import from it`,
  })),
).map((z) => (z.except.length > 0 ? z : { target: z.target, from: z.from, message: z.message }));

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'fixtures/**', 'bin/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['src/**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.d.ts', '.js', '.json', '.node'] })],
    },
    rules: {
      'import-x/no-cycle': 'error',
      'import-x/no-restricted-paths': ['error', { zones }],
    },
  },
);
