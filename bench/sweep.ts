/**
 * Sweeps that never block (issue 9, part 4): what removing expired entries
 * does to the event loop.
 *
 *   npm run build && node dist/bench/sweep.js [--entries 1000000] [--wait 60]
 *
 * `run()` returns every number as a JSON-able object; run directly, the file
 * prints markdown tables and the JSON.
 *
 * 1. Background sweep. 1,000,000 entries are stored under a fake clock (the
 *    engine's `now` option) with a 1 s TTL and no jitter, then the clock is
 *    moved 2 s on: every entry is expired. The sweep timer runs on real time
 *    (`cleanupIntervalSeconds: 0.05`). Until `getStats().totalEntries` is 0
 *    (at most `wait` seconds) we record the event-loop delay with
 *    `monitorEventLoopDelay({ resolution: 1 })` and with a 1 ms
 *    `setInterval` probe, GC pauses, and what the sweep does per turn of
 *    the event loop: a `setImmediate` probe reads `getStats().expirations`
 *    once per turn, and async_hooks follow the cache's sweep timer and every
 *    timer or immediate its callbacks schedule (bench/support/callbacks.ts),
 *    counting the callbacks that removed entries in each turn. More than
 *    one such callback in a turn means sweep chains overlap.
 * 2. Synchronous `sweep()` of 1,000,000 expired entries, timed once.
 * The hit ratio of the eviction policies is bench/hit-ratio.ts.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { AuthzCache } from '../lib/index.js'
import { DECISION, makePairs, type Pair } from './support/pairs.js'
import { median } from './support/stats.js'
import { watchGc, type GcSummary } from './support/gc.js'
import { CallbackWatch } from './support/callbacks.js'
import { duration, fixed, int, table, targetsTable, type Target } from './support/format.js'
import { describeMachine, startRun, type RunInfo } from './support/machine.js'

const UNBOUNDED_MB = 1_000_000
/** Where the fake clock starts (ms); any fixed value works. */
const CLOCK_START = 1_700_000_000_000
const TTL_SECONDS = 1
const MAX_DELAY_TARGET_MS = 50

// ------------------------------------------------------------------ types

export interface SweepBenchOptions {
  /** Expired entries of the sweep scenarios. Default 1,000,000. */
  entries?: number
  /** `cleanupIntervalSeconds` of the background sweep. Default 0.05. */
  intervalSeconds?: number
  /** Longest wait for the background sweep to empty the cache, in seconds. Default 60. */
  waitSeconds?: number
  log?: (line: string) => void
}

export interface BackgroundSweepResult {
  entries: number
  fillMs: number
  intervalSeconds: number
  waitMs: number
  /** True when `totalEntries` reached 0 within `waitMs`. */
  emptied: boolean
  remaining: number
  /** From moving the clock past expiry to an empty cache (or to giving up). */
  elapsedMs: number
  /** From moving the clock to the first turn that saw an entry removed. */
  firstRemovalAfterMs: number
  /** monitorEventLoopDelay (resolution 1 ms), over `elapsedMs`. */
  delayMs: { max: number, p99: number, p50: number, mean: number }
  /** The 1 ms setInterval probe: the longest gap past its 1 ms, and how many times it ran. */
  probe: { maxLagMs: number, ticks: number }
  turns: {
    /** Event-loop turns that removed at least one entry. */
    withRemovals: number
    /** Entries removed in the first such turn: one sweep batch. */
    first: number
    median: number
    max: number
    /** Most sweep callbacks that removed entries in one turn: above 1, sweep chains overlap. */
    maxSweepCallbacksInOneTurn: number
    /** Sweep callbacks (timer ticks and chained immediates) that removed entries. */
    sweepCallbacks: number
    /** The longest single sweep callback. */
    longestCallbackMs: number
    /** The most time sweep callbacks took within one turn. */
    longestTurnMs: number
    /** The turns in order: entries removed (turns that removed nothing left out). */
    removed: number[]
  }
  gc: GcSummary
}

export interface SyncSweepResult {
  entries: number
  fillMs: number
  sweepMs: number
  removed: number
  gc: GcSummary
}

export interface SweepBenchResult extends RunInfo {
  background: BackgroundSweepResult
  sync: SyncSweepResult
  targets: Target[]
}

// ------------------------------------------------------------ the sweeps

function expiringCache (entries: number, intervalSeconds: number, clock: { now: number }): AuthzCache {
  return new AuthzCache({
    maxEntries: entries,
    maxSizeMb: UNBOUNDED_MB,
    authTtlSeconds: TTL_SECONDS,
    negativeTtlSeconds: TTL_SECONDS,
    ttlJitterPercent: 0,
    cleanupIntervalSeconds: intervalSeconds,
    now: () => clock.now
  })
}

function fill (cache: AuthzCache, pairs: Pair[]): number {
  const t0 = performance.now()
  for (const p of pairs) cache.setGenerationAccess(p.g, p.u, DECISION)
  const ms = performance.now() - t0
  const held = cache.getStats().totalEntries
  if (held !== pairs.length) throw new Error(`fill: the cache holds ${held} entries, expected ${pairs.length}`)
  return Math.round(ms)
}

async function backgroundSweep (pairs: Pair[], intervalSeconds: number, waitMs: number): Promise<BackgroundSweepResult> {
  const clock = { now: CLOCK_START }
  let expirations = (): number => 0
  const watch = new CallbackWatch(() => expirations())
  const cache = watch.capture(() => expiringCache(pairs.length, intervalSeconds, clock))
  expirations = () => cache.getStats().expirations
  const fillMs = fill(cache, pairs)

  // Nothing below yields before the clock has moved: the sweep timer cannot run in between.
  const histogram = monitorEventLoopDelay({ resolution: 1 })
  const gc = watchGc()
  let probeTicks = 0
  let maxLagMs = 0
  let last = performance.now()
  const probe = setInterval(() => {
    const t = performance.now()
    maxLagMs = Math.max(maxLagMs, t - last - 1)
    last = t
    probeTicks++
  }, 1)
  const removed: number[] = []
  let firstRemovalAt = NaN
  let sweepCallbacks = 0
  let maxSweepCallbacks = 0
  let longestTurnMs = 0
  watch.take()
  clock.now += (TTL_SECONDS + 1) * 1000
  histogram.enable()
  const t0 = performance.now()
  const remaining = await new Promise<number>((resolve) => {
    let seen = cache.getStats().expirations
    const turn = (): void => {
      const stats = cache.getStats()
      const delta = stats.expirations - seen
      seen = stats.expirations
      if (delta > 0) {
        if (removed.length === 0) firstRemovalAt = performance.now()
        removed.push(delta)
      }
      const callbacks = watch.take()
      sweepCallbacks += callbacks.working
      maxSweepCallbacks = Math.max(maxSweepCallbacks, callbacks.working)
      longestTurnMs = Math.max(longestTurnMs, callbacks.busyMs)
      if (stats.totalEntries === 0 || performance.now() - t0 > waitMs) resolve(stats.totalEntries)
      else setImmediate(turn)
    }
    setImmediate(turn)
  })
  const elapsedMs = performance.now() - t0
  histogram.disable()
  clearInterval(probe)
  watch.stop()
  cache.close()
  const gcSummary = await gc.stop()
  return {
    entries: pairs.length,
    fillMs,
    intervalSeconds,
    waitMs,
    emptied: remaining === 0,
    remaining,
    elapsedMs: Math.round(elapsedMs),
    firstRemovalAfterMs: Math.round(firstRemovalAt - t0),
    delayMs: {
      max: histogram.max / 1e6,
      p99: histogram.percentile(99) / 1e6,
      p50: histogram.percentile(50) / 1e6,
      mean: histogram.mean / 1e6
    },
    probe: { maxLagMs: Math.round(maxLagMs * 10) / 10, ticks: probeTicks },
    turns: {
      withRemovals: removed.length,
      first: removed[0] ?? NaN,
      median: median(removed),
      max: removed.length === 0 ? NaN : Math.max(...removed),
      maxSweepCallbacksInOneTurn: maxSweepCallbacks,
      sweepCallbacks,
      longestCallbackMs: Math.round(watch.longestMs * 10) / 10,
      longestTurnMs: Math.round(longestTurnMs * 10) / 10,
      removed
    },
    gc: gcSummary
  }
}

async function syncSweep (pairs: Pair[]): Promise<SyncSweepResult> {
  const clock = { now: CLOCK_START }
  const cache = expiringCache(pairs.length, 0, clock)
  const fillMs = fill(cache, pairs)
  clock.now += (TTL_SECONDS + 1) * 1000
  const gc = watchGc()
  const t0 = performance.now()
  const removed = cache.sweep()
  const sweepMs = performance.now() - t0
  const gcSummary = await gc.stop()
  const left = cache.getStats().totalEntries
  cache.close()
  if (removed !== pairs.length || left !== 0) throw new Error(`sweep() removed ${removed} of ${pairs.length}; ${left} left`)
  return { entries: pairs.length, fillMs, sweepMs: Math.round(sweepMs), removed, gc: gcSummary }
}

// ------------------------------------------------------------------ run

export async function run (options: SweepBenchOptions = {}): Promise<SweepBenchResult> {
  const entries = options.entries ?? 1_000_000
  const intervalSeconds = options.intervalSeconds ?? 0.05
  const waitMs = (options.waitSeconds ?? 60) * 1000
  const log = options.log ?? (() => {})
  const runInfo = startRun(['lru-cache', 'quick-lru'])

  const pairs = makePairs(entries, 21)
  log(`background sweep: filling ${int(entries)} entries, then waiting up to ${waitMs / 1000} s for the sweep`)
  const background = await backgroundSweep(pairs, intervalSeconds, waitMs)
  log(`  ${background.emptied ? 'emptied' : `gave up, ${int(background.remaining)} left`} after ${background.elapsedMs} ms; max event-loop delay ${fixed(background.delayMs.max, 1)} ms`)
  log(`synchronous sweep(): filling ${int(entries)} entries`)
  const sync = await syncSweep(pairs)
  log(`  sweep() took ${sync.sweepMs} ms`)

  const targets: Target[] = []
  {
    const name = `background sweep of ${int(entries)} expired entries: max event-loop delay`
    const d = background.delayMs.max
    const note = background.emptied ? '' : `; the cache was not empty after ${waitMs / 1000} s (${int(background.remaining)} left)`
    targets.push({ name, pass: d < MAX_DELAY_TARGET_MS && background.emptied, detail: `${fixed(d, 1)} ms (< ${MAX_DELAY_TARGET_MS} ms)${note}` })
  }

  return {
    ...runInfo(),
    background,
    sync,
    targets
  }
}

// ---------------------------------------------------------------- report

function gcText (g: GcSummary): string {
  return `${g.count} pauses, ${fixed(g.totalMs, 0)} ms in all, longest ${fixed(g.maxMs, 1)} ms (mark-compact ${fixed(g.maxMajorMs, 1)} ms)`
}

export function formatResult (r: SweepBenchResult): string {
  const out: string[] = []
  const b = r.background
  const s = r.sync
  out.push(`Machine: ${describeMachine(r.machine, r.packages)}`)
  out.push('')
  out.push(targetsTable(r.targets))
  out.push('')
  out.push(`### Background sweep: ${int(b.entries)} expired entries, cleanupIntervalSeconds ${b.intervalSeconds}, fake clock moved past a ${TTL_SECONDS} s TTL`)
  out.push('')
  const t = b.turns
  out.push(table(['measure', 'value'], [
    ['fill (fake clock, not timed by the sweep)', `${int(b.fillMs)} ms`],
    ['cache emptied', b.emptied ? `yes, ${int(b.elapsedMs)} ms after the clock moved` : `no: ${int(b.remaining)} entries left after ${int(b.elapsedMs)} ms`],
    ['first removal seen', `${int(b.firstRemovalAfterMs)} ms after the clock moved`],
    ['event-loop delay (monitorEventLoopDelay) max', `${fixed(b.delayMs.max, 1)} ms`],
    ['event-loop delay p99 / p50 / mean', `${fixed(b.delayMs.p99, 1)} / ${fixed(b.delayMs.p50, 1)} / ${fixed(b.delayMs.mean, 1)} ms`],
    ['1 ms setInterval probe: longest lag', `${fixed(b.probe.maxLagMs, 1)} ms (${int(b.probe.ticks)} ticks)`],
    ['turns that removed entries', int(t.withRemovals)],
    ['removed per turn: first / median / max', `${int(t.first)} / ${int(t.median)} / ${int(t.max)}`],
    ['sweep callbacks that removed entries: in all / most in one turn', `${int(t.sweepCallbacks)} / ${t.maxSweepCallbacksInOneTurn}${t.maxSweepCallbacksInOneTurn > 1 ? ' (sweep chains overlap)' : ''}`],
    ['longest sweep callback / most sweep time in one turn', `${fixed(t.longestCallbackMs, 1)} / ${fixed(t.longestTurnMs, 1)} ms`],
    ['removed per turn, in order (first 30)', t.removed.slice(0, 30).map(int).join(', ') + (t.removed.length > 30 ? ', ...' : '')],
    ['GC during the sweep', gcText(b.gc)]
  ]))
  out.push('')
  out.push(`### Synchronous sweep(): ${int(s.entries)} expired entries`)
  out.push('')
  out.push(table(['measure', 'value'], [
    ['fill', `${int(s.fillMs)} ms`],
    ['sweep()', `${duration(s.sweepMs * 1e6)} (${int(s.removed)} removed, ${fixed((s.sweepMs * 1e3) / s.removed, 2)} us per entry)`],
    ['GC during sweep()', gcText(s.gc)]
  ]))
  out.push('')
  out.push(`Total ${(r.durationMs / 1000).toFixed(1)} s`)
  return out.join('\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      entries: { type: 'string' },
      wait: { type: 'string' }
    }
  })
  const result = await run({
    entries: values.entries === undefined ? undefined : Number(values.entries),
    waitSeconds: values.wait === undefined ? undefined : Number(values.wait),
    log: (line) => process.stderr.write(line + '\n')
  })
  process.stdout.write(formatResult(result) + '\n\n')
  const { removed, ...turns } = result.background.turns
  const json = { ...result, background: { ...result.background, turns: { ...turns, removed: removed.length > 200 ? [...removed.slice(0, 200), `... ${removed.length - 200} more`] : removed } } }
  process.stdout.write(JSON.stringify(json, null, 2) + '\n')
}
