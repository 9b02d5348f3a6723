/** Text helpers of the benchmark reports: durations, numbers and markdown tables. */

/** A duration given in ns, with a unit that keeps 3 significant figures. */
export function duration (ns: number): string {
  if (!Number.isFinite(ns)) return 'n/a'
  if (ns < 1e3) return `${Math.round(ns)} ns`
  if (ns < 1e6) return `${(ns / 1e3).toPrecision(3)} us`
  if (ns < 1e9) return `${(ns / 1e6).toPrecision(3)} ms`
  return `${(ns / 1e9).toPrecision(3)} s`
}

export function int (n: number): string {
  return n.toLocaleString('en-US')
}

export function fixed (n: number, digits = 2): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a'
}

/** A markdown table; cells are written as given. `align[i]` `'r'` right-aligns column i (numbers). */
export function table (headers: string[], rows: string[][], align: ReadonlyArray<'l' | 'r'> = []): string {
  const line = (cells: string[]): string => `| ${cells.join(' | ')} |`
  return [line(headers), line(headers.map((_, i) => align[i] === 'r' ? '--:' : '---')), ...rows.map(line)].join('\n')
}

/** A target of a benchmark: `pass` is null when it could not be evaluated. */
export interface Target {
  name: string
  pass: boolean | null
  detail: string
}

export function targetsTable (targets: Target[]): string {
  return table(['target', 'result', 'measured'], targets.map((t) => [
    t.name,
    t.pass === null ? 'not run' : t.pass ? 'pass' : '**miss**',
    t.detail
  ]))
}
