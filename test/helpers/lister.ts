/** Stats and lists a mounted tree over and over, as another analyst's `ls -lR` would. Usage: node lister.js DIR ROUNDS */
import * as fs from 'node:fs';
import * as path from 'node:path';

async function walk(dir: string): Promise<number> {
  let n = 0;
  for (const name of await fs.promises.readdir(dir)) {
    const p = path.join(dir, name);
    const st = await fs.promises.stat(p);
    n++;
    if (st.isDirectory()) n += await walk(p);
  }
  return n;
}

async function main(): Promise<void> {
  const [dir, rounds] = process.argv.slice(2);
  let total = 0;
  for (let i = 0; i < Number(rounds); i++) total += await walk(dir as string);
  process.stdout.write(`${total}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`lister: ${(err as Error).message}\n`);
  process.exit(1);
});
