/**
 * Eviction that is O(1) amortized (issue 9, part 2): the cost of one insert
 * into AuthzCache against lru-cache, on the same keys and decisions.
 *
 *   npm run build && node dist/bench/eviction.js [--sizes 10000,100000,1000000]
 *     [--rounds 5] [--batch 10000] [--deadline 20]
 *
 * `run()` returns every number as a JSON-able object; run directly, the file
 * prints markdown tables and the JSON.
 *
 * Scenarios
 * - Full cache: both caches hold N entries with capacity N (AuthzCache
 *   `maxEntries = N` with `maxSizeMb` far above what N entries take, so the
 *   entry cap binds; lru-cache `max = N`), then every round inserts `batch`
 *   new keys into each, so every insert evicts one entry.
 * - With room: 100,000 entries in a capacity of 200,000; the rounds insert
 *   new keys and nothing is evicted.
 * - Adversarial: the full cache of N entries, every entry read once
 *   (`getGenerationAccess` / `get`), then 1,000 new keys inserted. A policy
 *   that gives read entries a second chance may walk the whole cache on the
 *   first of these inserts.
 *
 * Method
 * - Every insert is timed on its own with `process.hrtime.bigint()`: p50,
 *   mean (the amortized cost) and p99 of a round come from its `batch`
 *   single-insert samples, and the max is a real single insert. GC pauses
 *   count, for both contenders; the worker records them (perf_hooks `gc`
 *   entries) and the report also gives the slowest insert that no pause
 *   overlapped. The timer's own cost (the p50 of two back-to-back calls) is
 *   reported and taken off both p50s before their ratio is computed.
 * - The timed call is what a caller does: `setGenerationAccess(g, u,
 *   decision)` for AuthzCache; build the SPEC key
 *   `auth:gen:{g}:user:{u}:access` and `set` it for lru-cache. Ids are
 *   seeded version 4 UUIDs, flat strings, 20 generations per user.
 * - Rounds are interleaved: each round inserts the same new keys into both
 *   caches, the contender that goes first alternates, and the report takes
 *   the median of per-round p50s and the median of per-round paired ratios.
 * - Each cache size runs in its own worker thread (a fresh heap per size).
 *   An adversarial insert can block for minutes, so the main thread stops
 *   the worker when one round of adversarial inserts has not returned after
 *   `deadline` seconds, and reports the insert as longer than that.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { LRUCache } from 'lru-cache'
import { AuthzCache, type Decision } from '../lib/index.js'
import { DECISION, makePairs, specKey, type Pair } from './support/pairs.js'
import { median, summarize, timerFloorNs, type Summary } from './support/stats.js'
import { GcRecorder } from './support/gc.js'
import { duration, fixed, int, table, targetsTable, type Target } from './support/format.js'
import { describeMachine, startRun, type RunInfo } from './support/machine.js'

/** Far above what the largest cache takes, so that `maxEntries` is the cap that binds. */
const UNBOUNDED_MB = 1_000_000
const ROOM_PREFILL = 100_000
const ROOM_CAPACITY = 200_000
const ADVERSARIAL_INSERTS = 1_000
/** The p50 ratio AuthzCache / lru-cache a full-cache insert must stay within, at these sizes. */
const FULL_RATIO_TARGET = 3
const FULL_RATIO_SIZES = [100_000, 1_000_000]
/** No single adversarial insert may take longer, at this size. */
const ADVERSARIAL_MAX_MS = 1
const ADVERSARIAL_TARGET_SIZE = 1_000_000

type ContenderName = 'engine' | 'lru'

// ------------------------------------------------------------------ types

export interface EvictionBenchOptions {
  /** Cache sizes of the full-cache and adversarial scenarios. Default 10k, 100k, 1M. */
  sizes?: number[]
  /** Interleaved rounds of the full-cache and with-room scenarios. Default 5. */
  rounds?: number
  /** New keys each contender inserts per round, each timed on its own. Default 10,000. */
  batch?: number
  /** Adversarial rounds (read every entry, then insert) per size. Default 3. */
  adversarialRounds?: number
  /** Seconds after which a round of adversarial inserts that has not returned is stopped. Default 20. */
  deadlineSeconds?: number
  /** Progress lines (stderr when run directly). Default: none. */
  log?: (line: string) => void
}

/** One contender over the rounds of a scenario, in ns. */
export interface ContenderTimes {
  /** Median over rounds of each round's p50 of single inserts. */
  p50Ns: number
  /** Median over rounds of each round's mean: the amortized cost of an insert. */
  meanNs: number
  /** Median over rounds of each round's p99. */
  p99Ns: number
  /** The slowest single insert of all rounds. */
  maxNs: number
  /** The slowest single insert that no GC pause overlapped. */
  maxOutsideGcNs: number
  /** Single inserts above 1 ms, all rounds. */
  over1ms: number
  /** Of those, the ones a GC pause overlapped. */
  over1msDuringGc: number
  roundsP50Ns: number[]
}

export interface InsertComparison {
  entries: number
  capacity: number
  insertsPerRound: number
  rounds: number
  fillMs: { engine: number, lru: number }
  engine: ContenderTimes
  lru: ContenderTimes
  /** Median over rounds of (engine p50 - timer) / (lru-cache p50 - timer), paired by round. */
  ratioP50: number
  roundRatios: number[]
  /** AuthzCache's evictions during the rounds, and the number expected. */
  evictions: number
  expectedEvictions: number
}

export interface AdversarialRound {
  round: number
  /** Hits of the pass that reads every entry once (should be every entry). */
  readHits: { engine: number, lru: number }
  readMs: { engine: number, lru: number }
  lru: Summary
  /** Null when the worker was stopped at the deadline before the inserts returned. */
  engine: Summary | null
  /** Set when the round did not finish: the deadline, in ms, after which it was stopped. */
  stoppedAfterMs?: number
}

export interface AdversarialResult {
  entries: number
  insertsPerRound: number
  rounds: AdversarialRound[]
  /** Slowest single AuthzCache insert; Infinity when a round was stopped at the deadline. */
  engineMaxNs: number
  /** Slowest single AuthzCache insert no GC pause overlapped (finished rounds only). */
  engineMaxOutsideGcNs: number
  lruMaxNs: number
}

export interface EvictionBenchResult extends RunInfo {
  method: {
    rounds: number
    batch: number
    adversarialRounds: number
    deadlineSeconds: number
    timerFloorNs: number
    statistic: string
    value: Decision
  }
  full: InsertComparison[]
  room: InsertComparison
  adversarial: AdversarialResult[]
  targets: Target[]
}

// ------------------------------------------------------------ the worker

interface WorkerTask {
  bench: 'eviction'
  task: 'full' | 'room'
  entries: number
  capacity: number
  rounds: number
  batch: number
  adversarialRounds: number
  seed: number
}

type WorkerMessage =
  | { type: 'timer', ns: number }
  | { type: 'fill', contender: ContenderName, ms: number }
  | { type: 'round', round: number, engine: Summary, lru: Summary }
  | { type: 'evictions', evictions: number, expected: number }
  | { type: 'adv-start', round: number, readMs: number, readHits: number }
  | { type: 'adv', round: number, contender: ContenderName, readMs: number, readHits: number, insert: Summary }

/** Single-insert durations (ns) and their start times (`performance.now()`, ms, to match GC pauses). */
interface Timings {
  samples: Float64Array
  starts: Float64Array
}

interface Caches {
  engine: AuthzCache
  lru: LRUCache<string, Decision>
}

/**
 * Inserts `pairs[from]` to `pairs[from + count - 1]` into the cache of
 * `contender`, each timed on its own. The contender is a branch inside the
 * loop, not a callback: a call through a function shared by both would be
 * timed too, and would not be inlined.
 */
/** Sink of `touchIds`, so the reads are not optimized away. */
export let touched = 0

/**
 * Reads every character of the ids of the next batch, untimed. The first
 * read of a fresh string costs ~700 ns of cache misses: whichever contender
 * went first in a round paid it for both (it moved the ratio between 2.1x
 * and 4.8x with the order). In a service the ids were just parsed from the
 * request, so they are warm.
 */
function touchIds (pairs: Pair[], from: number, count: number): void {
  let sum = 0
  for (let i = from; i < from + count; i++) {
    const { g, u } = pairs[i]
    for (let k = 0; k < g.length; k++) sum += g.charCodeAt(k)
    for (let k = 0; k < u.length; k++) sum += u.charCodeAt(k)
  }
  touched += sum
}

function timedInserts (caches: Caches, contender: ContenderName, pairs: Pair[], from: number, count: number): Timings {
  touchIds(pairs, from, count)
  const samples = new Float64Array(count)
  const starts = new Float64Array(count)
  for (let i = 0; i < count; i++) {
    const p = pairs[from + i]
    starts[i] = performance.now()
    const t0 = process.hrtime.bigint()
    if (contender === 'engine') caches.engine.setGenerationAccess(p.g, p.u, DECISION)
    else caches.lru.set(specKey(p.g, p.u), DECISION)
    samples[i] = Number(process.hrtime.bigint() - t0)
  }
  return { samples, starts }
}

async function workerMain (task: WorkerTask): Promise<void> {
  const post = (message: WorkerMessage): void => { parentPort?.postMessage(message) }
  post({ type: 'timer', ns: timerFloorNs() })
  const n = task.entries
  const adversarial = task.task === 'full' ? task.adversarialRounds * ADVERSARIAL_INSERTS : 0
  const pairs = makePairs(n + task.rounds * task.batch + adversarial, task.seed)

  const engine = new AuthzCache({
    maxEntries: task.capacity,
    maxSizeMb: UNBOUNDED_MB,
    cleanupIntervalSeconds: 0,
    ttlJitterPercent: 0,
    authTtlSeconds: 86_400
  })
  const lru = new LRUCache<string, Decision>({ max: task.capacity })
  const caches: Caches = { engine, lru }

  let t = performance.now()
  for (let i = 0; i < n; i++) engine.setGenerationAccess(pairs[i].g, pairs[i].u, DECISION)
  post({ type: 'fill', contender: 'engine', ms: performance.now() - t })
  t = performance.now()
  for (let i = 0; i < n; i++) lru.set(specKey(pairs[i].g, pairs[i].u), DECISION)
  post({ type: 'fill', contender: 'lru', ms: performance.now() - t })
  if (engine.getStats().totalEntries !== n || lru.size !== n) {
    throw new Error(`fill: AuthzCache holds ${engine.getStats().totalEntries}, lru-cache ${lru.size}, expected ${n}`)
  }

  const gc = new GcRecorder()
  await gc.take()
  let next = n
  const evictionsBefore = engine.getStats().evictions
  for (let r = 0; r < task.rounds; r++) {
    const from = next
    next += task.batch
    let e: Timings
    let l: Timings
    if (r % 2 === 0) {
      e = timedInserts(caches, 'engine', pairs, from, task.batch)
      l = timedInserts(caches, 'lru', pairs, from, task.batch)
    } else {
      l = timedInserts(caches, 'lru', pairs, from, task.batch)
      e = timedInserts(caches, 'engine', pairs, from, task.batch)
    }
    const pauses = await gc.take()
    post({ type: 'round', round: r, engine: summarize(e.samples, e.starts, pauses), lru: summarize(l.samples, l.starts, pauses) })
  }
  const expected = Math.max(0, next - task.capacity)
  post({ type: 'evictions', evictions: engine.getStats().evictions - evictionsBefore, expected })

  for (let r = 0; r < (task.task === 'full' ? task.adversarialRounds : 0); r++) {
    const from = next
    next += ADVERSARIAL_INSERTS
    // The resident entries are the last n inserted, oldest first: both caches evict the oldest unread entry.
    t = performance.now()
    let hits = 0
    for (let i = from - n; i < from; i++) if (lru.get(specKey(pairs[i].g, pairs[i].u)) !== undefined) hits++
    const lruReadMs = performance.now() - t
    await gc.take()
    const l = timedInserts(caches, 'lru', pairs, from, ADVERSARIAL_INSERTS)
    const lruPauses = await gc.take()
    post({ type: 'adv', round: r, contender: 'lru', readMs: lruReadMs, readHits: hits, insert: summarize(l.samples, l.starts, lruPauses) })

    t = performance.now()
    hits = 0
    for (let i = from - n; i < from; i++) if (engine.getGenerationAccess(pairs[i].g, pairs[i].u).hit) hits++
    const engineReadMs = performance.now() - t
    await gc.take()
    post({ type: 'adv-start', round: r, readMs: engineReadMs, readHits: hits })
    const e = timedInserts(caches, 'engine', pairs, from, ADVERSARIAL_INSERTS)
    const enginePauses = await gc.take()
    post({ type: 'adv', round: r, contender: 'engine', readMs: engineReadMs, readHits: hits, insert: summarize(e.samples, e.starts, enginePauses) })
  }
  gc.stop()
  engine.close()
}

// ------------------------------------------------------- the main thread

interface WorkerOutcome {
  messages: WorkerMessage[]
  /** Set when an adversarial round was stopped at the deadline. */
  stopped?: { round: number, afterMs: number }
}

function runWorker (task: WorkerTask, deadlineMs: number, log: (line: string) => void, label: string): Promise<WorkerOutcome> {
  return new Promise((resolve, reject) => {
    const messages: WorkerMessage[] = []
    let stopped: WorkerOutcome['stopped']
    let deadline: NodeJS.Timeout | undefined
    const worker = new Worker(new URL(import.meta.url), {
      workerData: task,
      resourceLimits: { maxOldGenerationSizeMb: 8192 }
    })
    worker.on('message', (message: WorkerMessage) => {
      messages.push(message)
      if (message.type === 'fill') log(`  ${label}: ${message.contender} filled in ${Math.round(message.ms)} ms`)
      else if (message.type === 'round') log(`  ${label}: round ${message.round + 1}/${task.rounds}`)
      else if (message.type === 'adv-start') {
        log(`  ${label}: adversarial round ${message.round + 1}, AuthzCache inserting (stopped after ${deadlineMs / 1000} s)`)
        deadline = setTimeout(() => {
          stopped = { round: message.round, afterMs: deadlineMs }
          log(`  ${label}: adversarial round ${message.round + 1} stopped at the deadline`)
          worker.terminate().catch(() => {})
        }, deadlineMs)
      } else if (message.type === 'adv' && message.contender === 'engine') {
        clearTimeout(deadline)
        log(`  ${label}: adversarial round ${message.round + 1}: slowest AuthzCache insert ${duration(message.insert.max)}`)
      }
    })
    worker.on('error', (err) => {
      clearTimeout(deadline)
      reject(err)
    })
    worker.on('exit', () => {
      clearTimeout(deadline)
      resolve({ messages, stopped })
    })
  })
}

function times (summaries: Summary[]): ContenderTimes {
  return {
    p50Ns: median(summaries.map((s) => s.p50)),
    meanNs: median(summaries.map((s) => s.mean)),
    p99Ns: median(summaries.map((s) => s.p99)),
    maxNs: Math.max(...summaries.map((s) => s.max)),
    maxOutsideGcNs: Math.max(...summaries.map((s) => s.maxOutsideGc)),
    over1ms: summaries.reduce((sum, s) => sum + s.over1ms, 0),
    over1msDuringGc: summaries.reduce((sum, s) => sum + s.over1msDuringGc, 0),
    roundsP50Ns: summaries.map((s) => s.p50)
  }
}

function comparison (task: WorkerTask, outcome: WorkerOutcome, floorNs: number): InsertComparison {
  const rounds = outcome.messages.filter((m) => m.type === 'round')
  const fill = (c: ContenderName): number => {
    const m = outcome.messages.find((x) => x.type === 'fill' && x.contender === c)
    return m?.type === 'fill' ? Math.round(m.ms) : NaN
  }
  const ev = outcome.messages.find((m) => m.type === 'evictions')
  const roundRatios = rounds.map((r) => (r.engine.p50 - floorNs) / (r.lru.p50 - floorNs))
  return {
    entries: task.entries,
    capacity: task.capacity,
    insertsPerRound: task.batch,
    rounds: rounds.length,
    fillMs: { engine: fill('engine'), lru: fill('lru') },
    engine: times(rounds.map((r) => r.engine)),
    lru: times(rounds.map((r) => r.lru)),
    ratioP50: median(roundRatios),
    roundRatios,
    evictions: ev?.type === 'evictions' ? ev.evictions : NaN,
    expectedEvictions: ev?.type === 'evictions' ? ev.expected : NaN
  }
}

function adversarialResult (task: WorkerTask, outcome: WorkerOutcome): AdversarialResult {
  const rounds: AdversarialRound[] = []
  for (let r = 0; r < task.adversarialRounds; r++) {
    const lru = outcome.messages.find((m) => m.type === 'adv' && m.round === r && m.contender === 'lru')
    const engine = outcome.messages.find((m) => m.type === 'adv' && m.round === r && m.contender === 'engine')
    const started = outcome.messages.find((m) => m.type === 'adv-start' && m.round === r)
    if (lru?.type !== 'adv' || started === undefined) break
    const engineRead = engine?.type === 'adv' ? engine : undefined
    const read = started.type === 'adv-start' ? started : { readHits: NaN, readMs: NaN }
    rounds.push({
      round: r,
      readHits: { engine: read.readHits, lru: lru.readHits },
      readMs: { engine: read.readMs, lru: lru.readMs },
      lru: lru.insert,
      engine: engineRead?.insert ?? null,
      ...(outcome.stopped?.round === r ? { stoppedAfterMs: outcome.stopped.afterMs } : {})
    })
    if (engineRead === undefined) break
  }
  return {
    entries: task.entries,
    insertsPerRound: ADVERSARIAL_INSERTS,
    rounds,
    engineMaxNs: rounds.some((r) => r.engine === null) ? Infinity : Math.max(...rounds.map((r) => r.engine?.max ?? 0)),
    engineMaxOutsideGcNs: Math.max(...rounds.map((r) => r.engine?.maxOutsideGc ?? NaN).filter((x) => !Number.isNaN(x))),
    lruMaxNs: Math.max(...rounds.map((r) => r.lru.max))
  }
}

function timerOf (outcome: WorkerOutcome): number {
  const m = outcome.messages.find((x) => x.type === 'timer')
  return m?.type === 'timer' ? m.ns : 0
}

export async function run (options: EvictionBenchOptions = {}): Promise<EvictionBenchResult> {
  const sizes = options.sizes ?? [10_000, 100_000, 1_000_000]
  const rounds = options.rounds ?? 5
  const batch = options.batch ?? 10_000
  const adversarialRounds = options.adversarialRounds ?? 3
  const deadlineSeconds = options.deadlineSeconds ?? 20
  const log = options.log ?? (() => {})
  const runInfo = startRun(['lru-cache', 'quick-lru'])
  const floors: number[] = []

  log('with room: 100,000 entries, capacity 200,000')
  const roomTask: WorkerTask = { bench: 'eviction', task: 'room', entries: ROOM_PREFILL, capacity: ROOM_CAPACITY, rounds, batch, adversarialRounds: 0, seed: 7 }
  const roomOutcome = await runWorker(roomTask, deadlineSeconds * 1000, log, 'room')
  floors.push(timerOf(roomOutcome))
  const room = comparison(roomTask, roomOutcome, timerOf(roomOutcome))

  const full: InsertComparison[] = []
  const adversarial: AdversarialResult[] = []
  for (const [i, size] of sizes.entries()) {
    log(`full cache: ${int(size)} entries`)
    const task: WorkerTask = { bench: 'eviction', task: 'full', entries: size, capacity: size, rounds, batch, adversarialRounds, seed: 11 + i }
    const outcome = await runWorker(task, deadlineSeconds * 1000, log, int(size))
    floors.push(timerOf(outcome))
    full.push(comparison(task, outcome, timerOf(outcome)))
    adversarial.push(adversarialResult(task, outcome))
  }

  const targets: Target[] = []
  for (const size of FULL_RATIO_SIZES) {
    const row = full.find((f) => f.entries === size)
    const name = `full cache, ${int(size)} entries: insert p50 AuthzCache / lru-cache`
    if (row === undefined || row.rounds === 0) targets.push({ name, pass: null, detail: 'size not run' })
    else targets.push({ name, pass: row.ratioP50 <= FULL_RATIO_TARGET, detail: `${fixed(row.ratioP50)} x (<= ${FULL_RATIO_TARGET} x)` })
  }
  {
    const row = adversarial.find((a) => a.entries === ADVERSARIAL_TARGET_SIZE)
    const name = `fill ${int(ADVERSARIAL_TARGET_SIZE)}, read every entry, insert: slowest single AuthzCache insert`
    if (row === undefined || row.rounds.length === 0) {
      targets.push({ name, pass: null, detail: 'size not run' })
    } else if (row.engineMaxNs === Infinity) {
      targets.push({ name, pass: false, detail: `> ${deadlineSeconds} s (stopped at the deadline before it returned) (<= ${ADVERSARIAL_MAX_MS} ms)` })
    } else {
      targets.push({
        name,
        pass: row.engineMaxNs <= ADVERSARIAL_MAX_MS * 1e6,
        detail: `${duration(row.engineMaxNs)} (<= ${ADVERSARIAL_MAX_MS} ms); slowest with no GC pause overlapping it: ${duration(row.engineMaxOutsideGcNs)}`
      })
    }
  }

  return {
    ...runInfo(),
    method: {
      rounds,
      batch,
      adversarialRounds,
      deadlineSeconds,
      timerFloorNs: median(floors),
      statistic: 'every insert timed alone (process.hrtime.bigint); median over interleaved rounds of per-round p50 / p99; max = slowest single insert of all rounds; ratio = median of per-round (engine p50 - timer) / (lru-cache p50 - timer)',
      value: DECISION
    },
    full,
    room,
    adversarial,
    targets
  }
}

// ---------------------------------------------------------------- report

export function formatResult (r: EvictionBenchResult): string {
  const out: string[] = []
  out.push(`Machine: ${describeMachine(r.machine, r.packages)}`)
  out.push('')
  out.push(`Every insert timed alone; ${r.method.rounds} interleaved rounds of ${int(r.method.batch)} new keys per contender; ` +
    `the timer itself costs ${Math.round(r.method.timerFloorNs)} ns (taken off both p50s before the ratio). ` +
    'p50 and p99: median over rounds; max: the slowest single insert of all rounds.')
  out.push('')
  out.push(targetsTable(r.targets))
  out.push('')
  out.push('### Insert into a full cache (every insert evicts one entry)')
  out.push('')
  const timeRows = (rows: InsertComparison[], label: (c: InsertComparison) => string): string[][] => rows.map((c) => [
    label(c),
    `${int(c.fillMs.engine)} / ${int(c.fillMs.lru)}`,
    duration(c.engine.p50Ns),
    duration(c.lru.p50Ns),
    `**${fixed(c.ratioP50)} x** (${c.roundRatios.map((x) => fixed(x, 1)).join(', ')})`,
    `${duration(c.engine.meanNs)} / ${duration(c.lru.meanNs)}`,
    `${duration(c.engine.p99Ns)} / ${duration(c.lru.p99Ns)}`,
    `${duration(c.engine.maxNs)} / ${duration(c.lru.maxNs)}`,
    `${duration(c.engine.maxOutsideGcNs)} / ${duration(c.lru.maxOutsideGcNs)}`,
    `${c.engine.over1ms} (${c.engine.over1msDuringGc}) / ${c.lru.over1ms} (${c.lru.over1msDuringGc})`,
    Number.isNaN(c.evictions) ? 'n/a' : `${int(c.evictions)} of ${int(c.expectedEvictions)}`
  ])
  const timeHeaders = ['entries', 'fill ms', 'AuthzCache p50', 'lru-cache p50', 'p50 ratio (per round)', 'mean', 'p99', 'max', 'max outside GC', 'inserts > 1 ms (during GC)', 'AuthzCache evictions']
  out.push('Pairs a / b are AuthzCache / lru-cache. Mean: median over rounds of the mean insert (the amortized cost). ' +
    '"Outside GC": inserts that no GC pause of the worker overlapped (perf_hooks `gc` entries).')
  out.push('')
  out.push(table(timeHeaders, timeRows(r.full, (c) => int(c.entries))))
  out.push('')
  out.push(`### Insert with room (${int(r.room.entries)} entries, capacity ${int(r.room.capacity)}, nothing evicted)`)
  out.push('')
  out.push(table(timeHeaders, timeRows([r.room], (c) => `${int(c.entries)} -> ${int(c.entries + c.rounds * c.insertsPerRound)}`)))
  out.push('')
  out.push(`### Adversarial: full cache, every entry read once, then ${int(ADVERSARIAL_INSERTS)} new keys (per round)`)
  out.push('')
  const advRows: string[][] = []
  for (const a of r.adversarial) {
    for (const round of a.rounds) {
      const e = round.engine
      advRows.push([
        int(a.entries),
        String(round.round + 1),
        `${fixed(round.readMs.engine, 0)} / ${fixed(round.readMs.lru, 0)}`,
        `${Number.isNaN(round.readHits.engine) ? 'n/a' : int(round.readHits.engine)} / ${int(round.readHits.lru)}`,
        e === null ? `> ${fixed((round.stoppedAfterMs ?? 0) / 1000, 0)} s (stopped)` : `${duration(e.max)} (insert #${e.maxIndex + 1})`,
        e === null ? 'n/a' : duration(e.maxOutsideGc),
        e === null ? 'n/a' : `${e.over1ms} (${e.over1msDuringGc})`,
        e === null ? 'n/a' : `${duration(e.p50)} / ${duration(e.mean)}`,
        `${duration(round.lru.max)} (insert #${round.lru.maxIndex + 1})`,
        `${duration(round.lru.p50)} / ${duration(round.lru.mean)}`
      ])
    }
  }
  out.push(table(['entries', 'round', 'read-all ms (AuthzCache / lru-cache)', 'read hits', 'AuthzCache max', 'AuthzCache max outside GC', 'AuthzCache inserts > 1 ms (during GC)', 'AuthzCache p50 / mean', 'lru-cache max', 'lru-cache p50 / mean'], advRows))
  out.push('')
  out.push(`Total ${(r.durationMs / 1000).toFixed(1)} s`)
  return out.join('\n')
}

if (!isMainThread && (workerData as Partial<WorkerTask> | undefined)?.bench === 'eviction') {
  await workerMain(workerData as WorkerTask)
} else if (isMainThread && process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string' },
      rounds: { type: 'string' },
      batch: { type: 'string' },
      deadline: { type: 'string' }
    }
  })
  const result = await run({
    sizes: values.sizes?.split(',').map(Number),
    rounds: values.rounds === undefined ? undefined : Number(values.rounds),
    batch: values.batch === undefined ? undefined : Number(values.batch),
    deadlineSeconds: values.deadline === undefined ? undefined : Number(values.deadline),
    log: (line) => process.stderr.write(line + '\n')
  })
  process.stdout.write(formatResult(result) + '\n\n')
  process.stdout.write(JSON.stringify(result, (_k, v: unknown) => v === Infinity ? 'Infinity' : v, 2) + '\n')
}
