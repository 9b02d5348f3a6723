/** Order statistics of benchmark samples. */

export function median (values: readonly number[]): number {
  if (values.length === 0) return NaN
  const s = values.slice().sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

/** The nearest-rank percentile of ascending `sorted`. */
export function percentileOfSorted (sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

/** Timings of single operations, in ns. */
export interface Summary {
  count: number
  mean: number
  p50: number
  p99: number
  p999: number
  max: number
  /** Position of the slowest operation in the sample order. */
  maxIndex: number
  /** Operations slower than 1 ms. */
  over1ms: number
  /** Of those, the ones a GC pause overlapped (NaN when no pauses were given). */
  over1msDuringGc: number
  /** The slowest operation no GC pause overlapped (NaN when no pauses were given). */
  maxOutsideGc: number
}

/**
 * `samples[i]` is the duration of operation i in ns; with `starts` (its
 * `performance.now()` start, in ms) and the GC pauses of the same thread,
 * the slow operations are matched against the pauses that overlapped them.
 */
export function summarize (samples: Float64Array, starts?: Float64Array, pauses?: ReadonlyArray<{ start: number, ms: number }>): Summary {
  let maxIndex = 0
  let over1ms = 0
  let sum = 0
  for (let i = 0; i < samples.length; i++) {
    sum += samples[i]
    if (samples[i] > samples[maxIndex]) maxIndex = i
    if (samples[i] > 1e6) over1ms++
  }
  let over1msDuringGc = NaN
  let maxOutsideGc = NaN
  if (starts !== undefined && pauses !== undefined) {
    over1msDuringGc = 0
    maxOutsideGc = 0
    for (let i = 0; i < samples.length; i++) {
      const begin = starts[i]
      const end = begin + samples[i] / 1e6
      const duringGc = pauses.some((p) => p.start < end && p.start + p.ms > begin)
      if (duringGc && samples[i] > 1e6) over1msDuringGc++
      if (!duringGc && samples[i] > maxOutsideGc) maxOutsideGc = samples[i]
    }
  }
  const sorted = Float64Array.from(samples).sort()
  return {
    count: samples.length,
    mean: samples.length === 0 ? NaN : sum / samples.length,
    p50: percentileOfSorted(sorted, 50),
    p99: percentileOfSorted(sorted, 99),
    p999: percentileOfSorted(sorted, 99.9),
    max: sorted[sorted.length - 1] ?? NaN,
    maxIndex,
    over1ms,
    over1msDuringGc,
    maxOutsideGc
  }
}

/**
 * What `process.hrtime.bigint()` twice costs on its own, in ns (p50 of
 * back-to-back pairs): the floor under every single-operation timing.
 */
export function timerFloorNs (samples = 100_000): number {
  const out = new Float64Array(samples)
  for (let i = 0; i < samples; i++) {
    const t0 = process.hrtime.bigint()
    out[i] = Number(process.hrtime.bigint() - t0)
  }
  return percentileOfSorted(out.sort(), 50)
}
