/** Runs the CLI in this process and reports its peak RSS on stderr's last line: `maxrss=KiB`. */
import { main } from '../../src/cli/main';

main(process.argv.slice(2)).then((code) => {
  process.stderr.write(`maxrss=${process.resourceUsage().maxRSS}\n`);
  process.exit(code);
});
