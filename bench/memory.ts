/**
 * Memory benchmark (issue 9, part 3, "Memory that holds"): what the engine
 * really retains, side by side with lru-cache on the same keys and
 * decisions, and how far its own accounting (`getStats().totalSizeMb`) is
 * from that.
 *
 *   npm run build && node dist/bench/memory.js [--runs 3] [--concurrency 2] [--only s1-authz,s1-lru]
 *
 * `run()` returns every number as a JSON-able object; run directly, the file
 * prints a markdown table, the targets and the JSON.
 *
 * Method
 * - Every case (one scenario, one contender) runs in `runs` (3) fresh child
 *   processes started with `--expose-gc`; we report the median of each number
 *   over them (and the spread of the real bytes). A child measures one cache
 *   only, so no other cache shares its heap. At most `concurrency` (2)
 *   children run at once: each measures its own heap, so running side by side
 *   changes the wall time, not the bytes. Every child has a time limit and a
 *   `--max-old-space-size` bound; one that exceeds it is killed and reported.
 * - "Settled" means: `gc()` four times, each followed by a turn of the event
 *   loop (so ArrayBuffer backing stores and weak callbacks are released),
 *   then `process.memoryUsage()`.
 * - Real bytes = delta of `heapUsed + external`. `arrayBuffers` (every Buffer
 *   and ArrayBuffer) is already part of `external` in Node, so it is shown
 *   on its own but never added again.
 * - A second snapshot is settled after half the inserts ("real at half"):
 *   under a cap, equal numbers at half and at the end mean the retained
 *   bytes do not grow with the number of inserts.
 * - Before the baseline, the child fills a throwaway cache of the same kind
 *   with up to 2,000 entries (a tenth of the case at most) of other ids, so
 *   the code the fill runs is compiled and its inline caches are warm before
 *   the baseline, not counted as entries.
 * - AuthzCache: baseline settled after `new AuthzCache(options)`, final
 *   settled after the fill, with the cache still referenced. Its
 *   construction cost is shown apart (`ctor`).
 * - lru-cache (`max: N`) preallocates its slot arrays (keys, values, links)
 *   for `max` entries in its constructor: they are the per-entry storage, so
 *   its baseline is settled before construction.
 * - Keys: a seeded generator makes UUID v4 strings (flat one-byte strings,
 *   as a parsed request would give), the same sequence for every contender
 *   and every child of a scenario; the harness keeps none of them, so ids
 *   the cache retains are counted. lru-cache is keyed by the SPEC key
 *   `auth:gen:{generationId}:user:{userId}:access` and holds a deep-frozen
 *   copy made by a JSON round trip of the decision (the engine stores the
 *   same kind of copy).
 * - Accounted vs real: |accounted - real| / real, the SPEC's "to within 25%".
 *   "Real <= 1.25x the cap" follows from it, since the accounting stays under the cap.
 * - The numbers are those of whatever `dist/lib` holds when this runs.
 */
import { fork } from 'node:child_process'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { LRUCache } from 'lru-cache'
import { AuthzCache } from '../lib/index.js'
import type { CacheOptions, Decision } from '../lib/index.js'
import { specKey } from './support/pairs.js'
import { hexStrings, uuids } from './support/random.js'
import { median } from './support/stats.js'
import { int, table, targetsTable, type Target } from './support/format.js'
import { describeMachine, startRun, type RunInfo } from './support/machine.js'

const CHILD_FLAG = '--memory-bench-child'
const MB = 1024 * 1024
const WARMUP_ENTRIES = 2_000
/** Heap bound of a child: far above anything a case should retain, far below the machine. */
const CHILD_MAX_OLD_SPACE_MB = 6_144

// ------------------------------------------------------------------ types

type Contender = 'AuthzCache' | 'lru-cache'
type DecisionShape = 'small' | '2kb' | 'tags-distinct' | 'tags-shared'

/** What one child measures. */
export interface CaseSpec {
  id: string
  scenario: 1 | 2 | 3 | 4
  label: string
  contender: Contender
  decision: DecisionShape
  inserts: number
  /** Seed of the ids and decision contents: equal seeds, equal data. */
  seed: number
  /** AuthzCache options (besides the fixed ones) or lru-cache's `max`. */
  maxEntries: number
  maxSizeMb?: number
  compressionEnabled?: boolean
  tagsPerDecision?: number
  /** All inserts under one user id (scenario 4). */
  oneUser?: boolean
  timeoutMs: number
}

/** One child's numbers, in bytes unless named otherwise. */
export interface RunResult {
  entries: number
  realBytes: number
  heapBytes: number
  externalBytes: number
  arrayBuffersBytes: number
  /** Real bytes after the first half of the inserts (flat from half to end: no growth with inserts). */
  realAtHalfBytes: number
  constructionBytes: number
  /** AuthzCache only: `getStats().totalSizeMb` in bytes. */
  accountedBytes: number | null
  evictions: number | null
  decisionJsonBytes: number
  fillMs: number
}

export interface CaseResult {
  id: string
  scenario: number
  label: string
  contender: Contender
  inserts: number
  options: Record<string, unknown>
  runs: RunResult[]
  errors: string[]
  /** Median over runs of each number; null when no run finished. */
  median: RunResult | null
  /** Spread of the real bytes over the runs. */
  realMinBytes: number | null
  realMaxBytes: number | null
  perEntryBytes: number | null
  /** accounted / real (AuthzCache). */
  accountedOverReal: number | null
}

/** `pass` is null when a case it needs did not finish. */
export interface TargetResult extends Target {
  value: number | null
  threshold: number
}

export interface MemoryBenchResult extends RunInfo {
  method: {
    runsPerCase: number
    concurrency: number
    statistic: string
    real: string
    gc: string
    childExecArgv: string[]
    fixedOptions: CacheOptions
  }
  cases: CaseResult[]
  targets: TargetResult[]
}

export interface MemoryBenchOptions {
  /** Child processes per case. Default 3. */
  runs?: number
  /** Children at once. Default 2. */
  concurrency?: number
  /** Case ids to run (default: all); targets needing others report "not run". */
  only?: string[]
  /** Progress lines (stderr when run directly). Default: none. */
  log?: (line: string) => void
}

// ------------------------------------------------------------------ cases

/** Options every AuthzCache of this benchmark shares. */
const FIXED_OPTIONS: CacheOptions = {
  cleanupIntervalSeconds: 0,
  ttlJitterPercent: 0,
  authTtlSeconds: 30 * 24 * 3600,
  warmingEnabled: false,
  compressionThresholdBytes: 1024
}

const N = 50_000
const CAP_INSERTS = 1_000_000
/** Inserts of scenario 4: the real bytes stop growing after about two turnovers of the cap (about 400 and 600 inserts). */
const OWN_TAG_INSERTS = 600
const SHARED_TAG_INSERTS = 800
const TAGS_PER_DECISION = 2_000

const CASES: CaseSpec[] = [
  { id: 's1-authz', scenario: 1, label: '50k, small', contender: 'AuthzCache', decision: 'small', inserts: N, seed: 1, maxEntries: N, maxSizeMb: 4096, compressionEnabled: false, timeoutMs: 60_000 },
  { id: 's1-lru', scenario: 1, label: '50k, small', contender: 'lru-cache', decision: 'small', inserts: N, seed: 1, maxEntries: N, timeoutMs: 60_000 },
  { id: 's2-off', scenario: 2, label: '50k, 2 KB, compression off', contender: 'AuthzCache', decision: '2kb', inserts: N, seed: 2, maxEntries: N, maxSizeMb: 4096, compressionEnabled: false, timeoutMs: 60_000 },
  { id: 's2-on', scenario: 2, label: '50k, 2 KB, compression on (> 1024 B)', contender: 'AuthzCache', decision: '2kb', inserts: N, seed: 2, maxEntries: N, maxSizeMb: 4096, compressionEnabled: true, timeoutMs: 90_000 },
  { id: 's2-lru', scenario: 2, label: '50k, 2 KB (reference)', contender: 'lru-cache', decision: '2kb', inserts: N, seed: 2, maxEntries: N, timeoutMs: 60_000 },
  { id: 's3-small', scenario: 3, label: '1M inserts, small, 16 MB cap', contender: 'AuthzCache', decision: 'small', inserts: CAP_INSERTS, seed: 3, maxEntries: 10_000_000, maxSizeMb: 16, compressionEnabled: false, timeoutMs: 180_000 },
  { id: 's3-2kb', scenario: 3, label: '1M inserts, 2 KB, 16 MB cap', contender: 'AuthzCache', decision: '2kb', inserts: CAP_INSERTS, seed: 4, maxEntries: 10_000_000, maxSizeMb: 16, compressionEnabled: false, timeoutMs: 240_000 },
  { id: 's4-own', scenario: 4, label: `one user, ${int(TAGS_PER_DECISION)} own tags per decision, 8 MB cap`, contender: 'AuthzCache', decision: 'tags-distinct', inserts: OWN_TAG_INSERTS, seed: 5, maxEntries: 1_000_000, maxSizeMb: 8, compressionEnabled: false, tagsPerDecision: TAGS_PER_DECISION, oneUser: true, timeoutMs: 90_000 },
  { id: 's4-shared', scenario: 4, label: `one user, ${int(TAGS_PER_DECISION)} shared tags per decision, 8 MB cap`, contender: 'AuthzCache', decision: 'tags-shared', inserts: SHARED_TAG_INSERTS, seed: 6, maxEntries: 1_000_000, maxSizeMb: 8, compressionEnabled: false, tagsPerDecision: TAGS_PER_DECISION, oneUser: true, timeoutMs: 90_000 }
]

/** Order the children are started in: longest first, so two workers end together. */
const START_ORDER = ['s3-2kb', 's3-small', 's2-on', 's4-own', 's2-off', 's1-authz', 's2-lru', 's4-shared', 's1-lru']

// ------------------------------------------------------------ data (child)

/** Warm-up inserts: up to 2,000, at most a tenth of the case. */
function warmupCount (spec: CaseSpec): number {
  return Math.min(WARMUP_ENTRIES, Math.ceil(spec.inserts / 10))
}

/** Distinct 2 KB decisions the inserts cycle through (each cache stores its own copy of each). */
const MEDIA_POOL = 1_024

/**
 * The decision of each insert. `small`: a fresh `{ granted: true, access:
 * ['read'] }`. `2kb`: 40 media URLs of 46 characters with a random 12-hex
 * token each (about 2,000 bytes of JSON), taken in turn from a pool of 1,024
 * made before the baseline: both caches copy a decision through JSON, so
 * none of the pool's objects is shared with an entry, and the harness spends
 * its time and garbage on the caches, not on building URLs. `tags-distinct`:
 * a fresh decision with `tagsPerDecision` tags no other decision has;
 * `tags-shared`: the same `tagsPerDecision` tags on every decision.
 */
function decisions (shape: DecisionShape, hex: (length: number) => string, tagsPerDecision: number): () => Decision {
  switch (shape) {
    case 'small':
      return () => ({ granted: true, access: ['read'] })
    case '2kb': {
      const pool: Decision[] = new Array(MEDIA_POOL)
      for (let i = 0; i < MEDIA_POOL; i++) {
        const mediaUrls: string[] = new Array(40)
        for (let k = 0; k < 40; k++) mediaUrls[k] = `https://cdn.example.com/m/${hex(12)}/${k < 10 ? '0' : ''}${k}.webp`
        pool[i] = { granted: true, access: ['read'], mediaUrls }
      }
      let next = 0
      return () => {
        const d = pool[next]
        next = next + 1 === MEDIA_POOL ? 0 : next + 1
        return d
      }
    }
    case 'tags-distinct':
      return () => {
        const tags: string[] = new Array(tagsPerDecision)
        for (let k = 0; k < tagsPerDecision; k++) tags[k] = `asset:${hex(12)}`
        return { granted: true, access: ['read'], tags }
      }
    case 'tags-shared':
      return () => {
        const tags: string[] = new Array(tagsPerDecision)
        for (let k = 0; k < tagsPerDecision; k++) tags[k] = `team:t${k}`
        return { granted: true, access: ['read'], tags }
      }
  }
}

function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}

// ------------------------------------------------------------ child

interface Snapshot {
  heapUsed: number
  external: number
  arrayBuffers: number
}

const turn = async (): Promise<void> => await new Promise((resolve) => setImmediate(resolve))

async function settle (gc: () => void): Promise<Snapshot> {
  for (let i = 0; i < 4; i++) {
    gc()
    await turn()
  }
  const m = process.memoryUsage()
  return { heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers }
}

function engineOptions (spec: CaseSpec): CacheOptions {
  return {
    ...FIXED_OPTIONS,
    maxEntries: spec.maxEntries,
    maxSizeMb: spec.maxSizeMb,
    compressionEnabled: spec.compressionEnabled
  }
}

/** One cache under test, behind the few calls the child makes. */
interface Subject {
  insert: (g: string, u: string, decision: Decision) => void
  entries: () => number
  /** AuthzCache: `getStats().totalSizeMb` in bytes. */
  accounted: () => number | null
  evictions: () => number | null
  close: () => void
}

function subject (spec: CaseSpec, maxEntries = spec.maxEntries): Subject {
  if (spec.contender === 'AuthzCache') {
    const cache = new AuthzCache(engineOptions({ ...spec, maxEntries }))
    return {
      insert: (g, u, decision) => cache.setGenerationAccess(g, u, decision),
      entries: () => cache.getStats().totalEntries,
      accounted: () => Math.round(cache.getStats().totalSizeMb * MB),
      evictions: () => cache.getStats().evictions,
      close: () => cache.close()
    }
  }
  const cache = new LRUCache<string, Decision>({ max: maxEntries })
  return {
    // The copy an application would keep: its own frozen object, as the engine stores.
    insert: (g, u, decision) => cache.set(specKey(g, u), deepFreeze(JSON.parse(JSON.stringify(decision)) as Decision)),
    entries: () => cache.size,
    accounted: () => null,
    evictions: () => null,
    close: () => cache.clear()
  }
}

/** Inserts the next `count` entries of the sequence `id` gives (one fixed user in scenario 4). */
function inserter (spec: CaseSpec, id: () => string, decision: () => Decision): (cache: Subject, count: number) => void {
  const user = spec.oneUser === true ? id() : undefined
  return (cache, count) => {
    for (let i = 0; i < count; i++) {
      const g = id()
      cache.insert(g, user ?? id(), decision())
    }
  }
}

const total = (s: Snapshot): number => s.heapUsed + s.external

async function child (spec: CaseSpec): Promise<RunResult> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (typeof gc !== 'function') throw new Error('run the child with --expose-gc')
  const decisionSeed = spec.seed + 2_000_003
  const tags = spec.tagsPerDecision ?? 0
  const decisionJsonBytes = Buffer.byteLength(JSON.stringify(decisions(spec.decision, hexStrings(decisionSeed), tags)()))
  const decision = decisions(spec.decision, hexStrings(decisionSeed), tags)

  {
    const warm = subject(spec, Math.max(spec.maxEntries, WARMUP_ENTRIES))
    inserter(spec, uuids(spec.seed + 1_000_003), decision)(warm, warmupCount(spec))
    warm.close()
  }
  const fill = inserter(spec, uuids(spec.seed), decision)

  const s0 = await settle(gc)
  const cache = subject(spec)
  const s1 = await settle(gc)
  // lru-cache's constructor allocates its slot arrays for `max` entries: they are per-entry storage, counted.
  const base = spec.contender === 'lru-cache' ? s0 : s1
  const half = Math.floor(spec.inserts / 2)
  let t = performance.now()
  fill(cache, half)
  let fillMs = performance.now() - t
  const sHalf = await settle(gc)
  t = performance.now()
  fill(cache, spec.inserts - half)
  fillMs += performance.now() - t
  const s2 = await settle(gc)
  const result: RunResult = {
    entries: cache.entries(),
    realBytes: total(s2) - total(base),
    heapBytes: s2.heapUsed - base.heapUsed,
    externalBytes: s2.external - base.external,
    arrayBuffersBytes: s2.arrayBuffers - base.arrayBuffers,
    realAtHalfBytes: total(sHalf) - total(base),
    constructionBytes: total(s1) - total(s0),
    accountedBytes: cache.accounted(),
    evictions: cache.evictions(),
    decisionJsonBytes,
    fillMs
  }
  cache.close()
  return result
}

// ------------------------------------------------------------ parent

type ChildMessage = { type: 'result', result: RunResult } | { type: 'error', message: string }

const CHILD_EXEC_ARGV = ['--expose-gc', `--max-old-space-size=${CHILD_MAX_OLD_SPACE_MB}`]

async function runChild (spec: CaseSpec): Promise<RunResult> {
  return await new Promise((resolve, reject) => {
    const proc = fork(fileURLToPath(import.meta.url), [CHILD_FLAG, JSON.stringify(spec)], {
      execArgv: CHILD_EXEC_ARGV,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc']
    })
    let message: ChildMessage | undefined
    const timer = setTimeout(() => {
      message = { type: 'error', message: `killed after ${spec.timeoutMs / 1000} s` }
      proc.kill('SIGKILL')
    }, spec.timeoutMs)
    proc.on('message', (m: ChildMessage) => { message ??= m })
    proc.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    proc.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (message?.type === 'result') resolve(message.result)
      else reject(new Error(message?.type === 'error' ? message.message : `child exited (${signal ?? code}) without a result`))
    })
  })
}

function medianRun (runs: RunResult[]): RunResult | null {
  if (runs.length === 0) return null
  const m = (pick: (r: RunResult) => number): number => median(runs.map(pick))
  const accounted = runs.every((r) => r.accountedBytes !== null) ? m((r) => r.accountedBytes ?? 0) : null
  const evictions = runs.every((r) => r.evictions !== null) ? m((r) => r.evictions ?? 0) : null
  return {
    entries: m((r) => r.entries),
    realBytes: m((r) => r.realBytes),
    heapBytes: m((r) => r.heapBytes),
    externalBytes: m((r) => r.externalBytes),
    arrayBuffersBytes: m((r) => r.arrayBuffersBytes),
    realAtHalfBytes: m((r) => r.realAtHalfBytes),
    constructionBytes: m((r) => r.constructionBytes),
    accountedBytes: accounted,
    evictions,
    decisionJsonBytes: m((r) => r.decisionJsonBytes),
    fillMs: Math.round(m((r) => r.fillMs))
  }
}

function r2 (value: number): number {
  return Math.round(value * 100) / 100
}

function mb (bytes: number): string {
  return (bytes / MB).toFixed(2)
}

function targets (cases: CaseResult[]): TargetResult[] {
  const byId = new Map(cases.map((c) => [c.id, c]))
  const done = (id: string): CaseResult | undefined => {
    const c = byId.get(id)
    return c?.median === null ? undefined : c
  }
  const out: TargetResult[] = []
  const notRun = (name: string, threshold: number, ids: string[]): void => {
    out.push({ name, pass: null, detail: `not run (${ids.join(', ')} missing)`, value: null, threshold })
  }

  {
    const name = 'S1: AuthzCache real bytes/entry <= 1.3x lru-cache'
    const a = done('s1-authz')
    const l = done('s1-lru')
    if (a === undefined || l === undefined) notRun(name, 1.3, ['s1-authz', 's1-lru'])
    else {
      const ratio = (a.perEntryBytes ?? NaN) / (l.perEntryBytes ?? NaN)
      out.push({ name, pass: ratio <= 1.3, value: r2(ratio), threshold: 1.3, detail: `${Math.round(a.perEntryBytes ?? NaN)} B vs ${Math.round(l.perEntryBytes ?? NaN)} B per entry: ${ratio.toFixed(2)}x (<= 1.30x)` })
    }
  }
  const within = (id: string, label: string): void => {
    const name = `${label}: accounted within 25% of real`
    const c = done(id)
    if (c?.median?.accountedBytes === null || c?.median === undefined || c.median === null) return notRun(name, 25, [id])
    const { accountedBytes, realBytes } = c.median
    const off = Math.abs((accountedBytes ?? 0) - realBytes) / realBytes * 100
    out.push({ name, pass: off <= 25, value: r2(off), threshold: 25, detail: `accounted ${mb(accountedBytes ?? 0)} MB vs real ${mb(realBytes)} MB: off by ${off.toFixed(1)}% (<= 25%; real = ${(realBytes / (accountedBytes ?? NaN)).toFixed(2)}x accounted)` })
  }
  const underCap = (id: string, label: string, capMb: number): void => {
    const name = `${label}: real <= 1.25x the ${capMb} MB cap`
    const c = done(id)
    if (c === undefined || c.median === null) return notRun(name, 1.25, [id])
    const ratio = c.median.realBytes / (capMb * MB)
    out.push({ name, pass: ratio <= 1.25, value: r2(ratio), threshold: 1.25, detail: `real ${mb(c.median.realBytes)} MB under a ${capMb} MB cap: ${ratio.toFixed(2)}x (<= 1.25x)` })
  }
  within('s1-authz', 'S1 (50k small)')
  {
    const name = 'S2: compression on retains less than off (2 KB decisions)'
    const on = done('s2-on')
    const off = done('s2-off')
    if (on?.median == null || off?.median == null) notRun(name, 1, ['s2-on', 's2-off'])
    else {
      const ratio = on.median.realBytes / off.median.realBytes
      out.push({ name, pass: ratio < 1, value: r2(ratio), threshold: 1, detail: `on ${Math.round(on.perEntryBytes ?? NaN)} B vs off ${Math.round(off.perEntryBytes ?? NaN)} B per entry: ${ratio.toFixed(2)}x (< 1)` })
    }
  }
  within('s2-off', 'S2 (2 KB, compression off)')
  within('s2-on', 'S2 (2 KB, compression on)')
  within('s3-small', 'S3 (1M inserts, small, 16 MB)')
  underCap('s3-small', 'S3 (1M inserts, small)', 16)
  within('s3-2kb', 'S3 (1M inserts, 2 KB, 16 MB)')
  underCap('s3-2kb', 'S3 (1M inserts, 2 KB)', 16)
  within('s4-own', 'S4 (2,000 own tags each, 8 MB)')
  underCap('s4-own', 'S4 (2,000 own tags each)', 8)
  within('s4-shared', 'S4 (2,000 shared tags each, 8 MB)')
  underCap('s4-shared', 'S4 (2,000 shared tags each)', 8)
  return out
}

export async function run (options: MemoryBenchOptions = {}): Promise<MemoryBenchResult> {
  const runs = options.runs ?? 3
  const concurrency = Math.max(1, options.concurrency ?? 2)
  const log = options.log ?? ((): void => {})
  const runInfo = startRun(['lru-cache', 'quick-lru'])

  const specs = options.only === undefined ? CASES : CASES.filter((c) => options.only?.includes(c.id))
  const collected = new Map<string, { runs: RunResult[], errors: string[] }>(specs.map((s) => [s.id, { runs: [], errors: [] }]))
  const queue: CaseSpec[] = []
  const rank = (spec: CaseSpec): number => START_ORDER.indexOf(spec.id)
  for (const spec of specs.slice().sort((a, b) => rank(a) - rank(b))) for (let r = 0; r < runs; r++) queue.push(spec)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < queue.length) {
      const spec = queue[next++]
      const slot = collected.get(spec.id) as { runs: RunResult[], errors: string[] }
      const t = performance.now()
      try {
        const r = await runChild(spec)
        slot.runs.push(r)
        log(`  ${spec.id}: run ${slot.runs.length + slot.errors.length}/${runs}: real ${mb(r.realBytes)} MB, ${int(r.entries)} entries${r.accountedBytes === null ? '' : `, accounted ${mb(r.accountedBytes)} MB`} (${((performance.now() - t) / 1000).toFixed(1)} s)`)
      } catch (error) {
        slot.errors.push((error as Error).message)
        log(`  ${spec.id}: run failed: ${(error as Error).message}`)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, worker))

  const cases: CaseResult[] = specs.map((spec) => {
    const { runs: done, errors } = collected.get(spec.id) as { runs: RunResult[], errors: string[] }
    const m = medianRun(done)
    const options: Record<string, unknown> = spec.contender === 'AuthzCache'
      ? { maxEntries: spec.maxEntries, maxSizeMb: spec.maxSizeMb, compressionEnabled: spec.compressionEnabled }
      : { max: spec.maxEntries }
    return {
      id: spec.id,
      scenario: spec.scenario,
      label: spec.label,
      contender: spec.contender,
      inserts: spec.inserts,
      options,
      runs: done,
      errors,
      median: m,
      realMinBytes: done.length === 0 ? null : Math.min(...done.map((r) => r.realBytes)),
      realMaxBytes: done.length === 0 ? null : Math.max(...done.map((r) => r.realBytes)),
      perEntryBytes: m === null || m.entries === 0 ? null : r2(m.realBytes / m.entries),
      accountedOverReal: m?.accountedBytes == null ? null : Math.round((m.accountedBytes / m.realBytes) * 1000) / 1000
    }
  })

  return {
    ...runInfo(),
    method: {
      runsPerCase: runs,
      concurrency,
      statistic: `median over ${runs} child processes of each number`,
      real: 'delta of heapUsed + external after forced GC (arrayBuffers is part of external: shown, not added); AuthzCache from after construction, lru-cache from before construction (its constructor preallocates per-slot arrays)',
      gc: 'gc() x4, each followed by setImmediate, before every snapshot; warm-up fill of a throwaway cache before the baseline',
      childExecArgv: CHILD_EXEC_ARGV,
      fixedOptions: FIXED_OPTIONS
    },
    cases,
    targets: targets(cases)
  }
}

// ------------------------------------------------------------ output

export function formatResult (r: MemoryBenchResult): string {
  const lines: string[] = []
  lines.push(`Machine: ${describeMachine(r.machine, r.packages)}`)
  lines.push('')
  lines.push(`${r.method.statistic}; real = ${r.method.real}`)
  lines.push(`AuthzCache fixed options: ${JSON.stringify(r.method.fixedOptions)}`)
  lines.push('')
  lines.push(targetsTable(r.targets))
  lines.push('')
  const rows = r.cases.map((c): string[] => {
    const opts = Object.entries(c.options).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}: ${String(v)}`).join(', ')
    const x = c.median
    if (x === null) return [c.id, c.label, c.contender, opts, '', int(c.inserts), `no run finished: ${c.errors.join('; ')}`, '', '', '', '', '', '', '', '', '']
    const spread = c.runs.length > 1 ? ` (${mb(c.realMinBytes ?? 0)}-${mb(c.realMaxBytes ?? 0)})` : ''
    const failed = c.errors.length > 0 ? ` [${c.errors.length} run(s) failed]` : ''
    return [
      c.id,
      c.label,
      c.contender,
      opts,
      int(x.decisionJsonBytes),
      int(c.inserts),
      int(x.entries),
      `${mb(x.realBytes)}${spread}${failed}`,
      mb(x.realAtHalfBytes),
      mb(x.heapBytes),
      `${mb(x.externalBytes)} (${mb(x.arrayBuffersBytes)})`,
      (x.constructionBytes / 1024).toFixed(0),
      String(Math.round(c.perEntryBytes ?? NaN)),
      x.accountedBytes === null ? '-' : mb(x.accountedBytes),
      x.accountedBytes === null ? '-' : (x.realBytes / x.accountedBytes).toFixed(2),
      (x.fillMs / 1000).toFixed(1)
    ]
  })
  lines.push(table(
    ['case', 'scenario', 'contender', 'options', 'decision JSON B', 'inserts', 'entries held', 'real MB (min-max)', 'real MB at half the inserts', 'heap MB', 'external MB (of which arrayBuffers)', 'ctor KB', 'real B/entry', 'accounted MB', 'real / accounted', 'fill s'],
    rows,
    ['l', 'l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']
  ))
  lines.push('')
  lines.push(`Total ${(r.durationMs / 1000).toFixed(1)} s`)
  return lines.join('\n')
}

function argValue (name: string): string | undefined {
  const i = process.argv.indexOf(name)
  return i === -1 ? undefined : process.argv[i + 1]
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv[2] === CHILD_FLAG) {
    const spec = JSON.parse(process.argv[3]) as CaseSpec
    let reply: ChildMessage
    try {
      reply = { type: 'result', result: await child(spec) }
    } catch (error) {
      reply = { type: 'error', message: (error as Error).stack ?? String(error) }
    }
    process.send?.(reply, () => process.exit(0))
  } else {
    const runsArg = argValue('--runs')
    const concurrencyArg = argValue('--concurrency')
    const result = await run({
      runs: runsArg === undefined ? undefined : Number(runsArg),
      concurrency: concurrencyArg === undefined ? undefined : Number(concurrencyArg),
      only: argValue('--only')?.split(','),
      log: (line) => process.stderr.write(line + '\n')
    })
    process.stdout.write(formatResult(result) + '\n\n')
    process.stdout.write(JSON.stringify(result, null, 2) + '\n')
  }
}
