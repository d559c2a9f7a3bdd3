const PROGRESS_INTERVAL_MS = 100;

/** A one-line bar on a terminal's stderr, redrawn at most every 100 ms. */
export class Progress {
  private done = 0;
  private last = 0;
  constructor(private readonly total: number, private readonly stream: NodeJS.WriteStream) {}

  add(n: number): void {
    this.done += n;
    const now = Date.now();
    if (now - this.last >= PROGRESS_INTERVAL_MS) {
      this.last = now;
      this.draw();
    }
  }

  private draw(): void {
    const frac = this.total > 0 ? this.done / this.total : 1;
    const width = Math.max(10, Math.min(40, (this.stream.columns ?? 80) - 40));
    const filled = Math.round(frac * width);
    const mib = (b: number): string => (b / (1024 * 1024)).toFixed(1);
    this.stream.write(`\r[${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${mib(this.done)}/${mib(this.total)} MiB`);
  }

  finish(): void {
    this.draw();
    this.stream.write('\n');
  }
}
