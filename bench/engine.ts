/**
 * In-process micro-benchmark of the L1 engine's hit path against a plain Map
 * floor and other caches, with mitata.
 *
 *   npm run build && node dist/bench/engine.js
 *
 * `run()` returns every number as a JSON-able object (bench/run.ts writes
 * BENCHMARKS.md from it); run directly, the file prints a table and the JSON.
 *
 * Method
 * - Every contender is measured with mitata's `measure()` once per round;
 *   rounds are interleaved (the contender order rotates every round) so that
 *   machine noise (frequency changes, other processes, GC of the shared heap)
 *   hits all contenders alike. Per round we take mitata's p50 (each sample is
 *   the mean of a batch of 4,096 calls); we report the median over rounds.
 * - Ids are fresh strings on every call. mitata's computed parameters build
 *   the argument of each timed call outside the timed region; ours makes a
 *   new pair with `JSON.parse('"' + id + '"')` (a new flat string, as a JWT
 *   claim or a decoded route param would be, never the object stored in the
 *   cache and never an interned constant), so no contender gets a string
 *   hash V8 cached on an earlier call, nor a pointer-equality shortcut
 *   against the stored key. Keys are visited in a rotating pattern over a
 *   shuffled array of all (generationId, userId) pairs of the cache.
 * - Every timed call checks its result; a miss during a measurement fails
 *   the benchmark (we measure hits only).
 */
import os from 'node:os'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { measure } from 'mitata'
import QuickLRU from 'quick-lru'
import { LRUCache } from 'lru-cache'
import { createCache } from 'async-cache-dedupe'
import { BentoCache, bentostore } from 'bentocache'
import { memoryDriver } from 'bentocache/drivers/memory'
import { AuthzCache, ACCESS_SAMPLE_EVERY } from '../lib/cache.js'
import type { Decision } from '../lib/index.js'

/** Working set of the hot-set flatness rows: the same at every cache size. */
const HOT_SET = 1_000

// ------------------------------------------------------------------ types

/** One contender of a side-by-side measurement. */
export interface ContenderResult {
  /** Short label, e.g. `a` or `f`. */
  id: string
  name: string
  /** Median over rounds of each round's p50, in ns per operation. */
  medianNs: number
  /** Fastest and slowest round (p50 of that round), in ns per operation. */
  minNs: number
  maxNs: number
  /** Each round's p50, in ns per operation, in round order. */
  roundsNs: number[]
  /** `medianNs` / the floor's `medianNs` (1 for the floor itself). */
  vsFloor: number
}

export interface TargetResult {
  name: string
  /** The measured quantity, in `unit`. */
  value: number
  unit: string
  /** `value` must be `<=` this (or `>=` when `atLeast`). */
  threshold: number
  atLeast: boolean
  pass: boolean
}

export interface FlatnessRow {
  entries: number
  /** Distinct pairs the rotation visits: every entry, or a hot subset. */
  workingSet: number
  engineNs: number
  floorNs: number
  /** engineNs / floorNs. */
  engineVsFloor: number
}

export interface EngineBenchResult {
  startedAt: string
  durationMs: number
  machine: {
    cpu: string
    cores: number
    availableParallelism: number
    totalMemoryGb: number
    platform: string
    arch: string
    node: string
    v8: string
  }
  packages: Record<string, string>
  method: {
    rounds: number
    minCpuTimeMsPerMeasurement: number
    statistic: string
    freshIds: string
    keyPattern: string
    value: Decision
  }
  /** Part 1: a hit with 10,000 entries in every cache (capacity 20,000: no cache is full). */
  hit: {
    entries: number
    capacity: number
    contenders: ContenderResult[]
  }
  /** Part 1b: the same hit when the cache is full (capacity = entries = 10,000), the steady state of a busy server. */
  hitFull: {
    entries: number
    capacity: number
    contenders: ContenderResult[]
  }
  /** Part 2: engine sync hit against cache size. */
  flatness: {
    maxEntries: number
    maxSizeMb: number
    buildMs: Record<string, number>
    /** Rotation over every entry of the cache. */
    allEntries: FlatnessRow[]
    /** Rotation over the same hot subset of at most 1,000 entries at every size. */
    hotSet: FlatnessRow[]
    /** Engine cost at 1M / at 1k, rotation over every entry. */
    growthAllEntries: number
    /** Floor cost at 1M / at 1k, rotation over every entry. */
    floorGrowthAllEntries: number
    /** Engine cost at 1M / at 1k, hot subset. */
    growthHotSet: number
    floorGrowthHotSet: number
  }
  /** Part 3: `invalidateUserData` of one user's entries in a 1,000,000-entry cache. */
  invalidation: {
    cacheEntries: number
    entriesPerUser: number
    repetitions: number
    warmup: number
    medianUs: number
    p90Us: number
    minUs: number
    maxUs: number
    /** Median time per removed entry. */
    perEntryUs: number
  }
  /** Part 4: the cost of the one-in-16 access-time sampling on the hit path. */
  sampling: {
    sampleEvery: number
    performanceNowNs: number
    dateNowNs: number
    /** A replica of the engine's ring-buffer write for one sample. */
    recordSampleNs: number
    /** (2 x performance.now() + record) / sampleEvery. */
    amortizedPerHitNs: number
    /** amortizedPerHitNs as a share of the engine's sync hit (part 1, f). */
    shareOfEngineHitPercent: number
    note: string
  }
  targets: TargetResult[]
}

export interface EngineBenchOptions {
  /** Rounds per side-by-side measurement (odd). Default 7. */
  rounds?: number
  /** Minimum timed CPU time per measurement, in ms. Default 60. */
  minCpuTimeMs?: number
  /** Progress lines (stderr when run directly). Default: none. */
  log?: (line: string) => void
}

// ------------------------------------------------------------ data set

interface Pair {
  g: string
  u: string
}

const ENTRIES_PER_USER = 20
const DECISION: Decision = { granted: true, access: ['read', 'write'], role: 'member' }

interface DataSet {
  /** Stored pairs, user by user (ENTRIES_PER_USER consecutive pairs per user). */
  pairs: Pair[]
  /** The same pairs shuffled: the order lookups rotate over. */
  order: Pair[]
}

function shuffled<T> (items: T[], seed: number): T[] {
  const out = items.slice()
  let s = seed >>> 0
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    const j = s % (i + 1)
    const t = out[i]
    out[i] = out[j]
    out[j] = t
  }
  return out
}

/** `n` entries: n / 20 users with 20 distinct generations each (every generation has one user). */
function dataSet (n: number, seed: number): DataSet {
  const pairs: Pair[] = new Array(n)
  let user = ''
  for (let i = 0; i < n; i++) {
    if (i % ENTRIES_PER_USER === 0) user = randomUUID()
    pairs[i] = { g: randomUUID(), u: user }
  }
  return { pairs, order: shuffled(pairs, seed) }
}

/** A new flat string with the same characters: no cached hash, not the stored object, not interned. */
function fresh (id: string): string {
  return JSON.parse('"' + id + '"') as string
}

/** The computed parameter of a timed call: the next pair of the rotation, as fresh strings. */
function rotation (order: Pair[], start = 0): () => Pair {
  let i = start % order.length
  return () => {
    const p = order[i]
    i = i + 1 === order.length ? 0 : i + 1
    return { g: fresh(p.g), u: fresh(p.u) }
  }
}

function specKey (g: string, u: string): string {
  return `auth:gen:${g}:user:${u}:access`
}

// --------------------------------------------------------------- measure

interface Stats {
  p50: number
  avg: number
  samples: number[]
}

type MeasureGen = (gen: () => Generator<unknown, void, unknown>, opts: Record<string, unknown>) => Promise<Stats>
const measureWith = measure as unknown as MeasureGen

interface Contender {
  id: string
  name: string
  /** Makes the generator mitata measures: yields the parameter maker and the timed call. */
  param: () => Pair
  call: (p: Pair) => unknown
  /** Throws when the last measurement saw a miss. */
  check: () => void
}

async function measureOne (c: Contender, minCpuTimeMs: number): Promise<number> {
  const stats = await measureWith(function * () {
    yield { 0: c.param, bench: c.call }
  }, { min_cpu_time: minCpuTimeMs * 1e6, gc: false })
  c.check()
  return stats.p50
}

function median (values: number[]): number {
  const s = values.slice().sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

function r2 (value: number): number {
  return Math.round(value * 100) / 100
}

/** Measures every contender once per round, rotating the order each round. */
async function interleaved (contenders: Contender[], rounds: number, minCpuTimeMs: number, log: (line: string) => void, label: string): Promise<ContenderResult[]> {
  const perRound: number[][] = contenders.map(() => [])
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < contenders.length; k++) {
      const idx = (k + r) % contenders.length
      perRound[idx].push(await measureOne(contenders[idx], minCpuTimeMs))
    }
    log(`  ${label}: round ${r + 1}/${rounds}`)
  }
  const medians = perRound.map(median)
  const floor = medians[0]
  return contenders.map((c, i) => ({
    id: c.id,
    name: c.name,
    medianNs: r2(medians[i]),
    minNs: r2(Math.min(...perRound[i])),
    maxNs: r2(Math.max(...perRound[i])),
    roundsNs: perRound[i].map(r2),
    vsFloor: r2(medians[i] / floor)
  }))
}

function missCounter (label: string): { miss: () => void, check: () => void } {
  let misses = 0
  return {
    miss: () => { misses++ },
    check: () => {
      if (misses > 0) throw new Error(`${label}: ${misses} misses during a hit measurement`)
    }
  }
}

// ------------------------------------------------------------- part 1

const noop = (): void => {}

function engineFor (maxEntries: number, maxSizeMb: number, evictionPolicy: 'tinylfu' | 'clock' = 'tinylfu'): AuthzCache {
  return new AuthzCache({
    evictionPolicy,
    maxEntries,
    maxSizeMb,
    cleanupIntervalSeconds: 0,
    ttlJitterPercent: 0,
    authTtlSeconds: 3600,
    resolvers: { generation: () => DECISION }
  })
}

function fill (cache: AuthzCache, pairs: Pair[]): void {
  for (const p of pairs) cache.setGenerationAccess(p.g, p.u, DECISION)
}

async function hitContenders (data: DataSet, capacity: number, full: boolean): Promise<{ contenders: Contender[], engine: AuthzCache, close: () => Promise<void> }> {
  const { pairs, order } = data
  const contenders: Contender[] = []
  const start = (k: number): number => (k * 977) % order.length

  // a. the floor: SPEC key + one Map.get
  const floor = new Map<string, Decision>()
  for (const p of pairs) floor.set(specKey(p.g, p.u), DECISION)
  {
    const m = missCounter('floor')
    contenders.push({
      id: 'a',
      name: 'floor: build SPEC key + Map.get',
      param: rotation(order, start(0)),
      call: (p) => { if (floor.get(`auth:gen:${p.g}:user:${p.u}:access`) === undefined) m.miss() },
      check: m.check
    })
  }

  // b. quick-lru, bare
  const qlru = new QuickLRU<string, Decision>({ maxSize: capacity })
  for (const p of pairs) qlru.set(specKey(p.g, p.u), DECISION)
  {
    const m = missCounter('quick-lru')
    contenders.push({
      id: 'b',
      name: 'quick-lru: build key + get',
      param: rotation(order, start(1)),
      call: (p) => { if (qlru.get(`auth:gen:${p.g}:user:${p.u}:access`) === undefined) m.miss() },
      check: m.check
    })
  }

  // c. lru-cache
  const lru = new LRUCache<string, Decision>({ max: capacity })
  for (const p of pairs) lru.set(specKey(p.g, p.u), DECISION)
  {
    const m = missCounter('lru-cache')
    contenders.push({
      id: 'c',
      name: 'lru-cache: build key + get',
      param: rotation(order, start(2)),
      call: (p) => { if (lru.get(`auth:gen:${p.g}:user:${p.u}:access`) === undefined) m.miss() },
      check: m.check
    })
  }

  let closeBento: (() => Promise<void>) | undefined
  if (!full) {
    // d. async-cache-dedupe hit (memory storage)
    const acdMisses = missCounter('async-cache-dedupe')
    let acdLoading = true
    const acd = createCache({ ttl: 3600, storage: { type: 'memory', options: { size: capacity } } })
      .define('access', {
        serialize: (p: Pair) => specKey(p.g, p.u),
        onMiss: () => { if (!acdLoading) acdMisses.miss() }
      }, async (_p: Pair) => DECISION)
    for (const p of pairs) await acd.access(p)
    acdLoading = false
    contenders.push({
      id: 'd',
      name: 'async-cache-dedupe: await defined fn (hit)',
      param: rotation(order, start(3)),
      call: (p) => acd.access(p),
      check: acdMisses.check
    })

    // e. bentocache, memory only
    const bentoMisses = missCounter('bentocache')
    let bentoLoading = true
    const b = new BentoCache({
      default: 'memory',
      stores: { memory: bentostore().useL1Layer(memoryDriver({ maxItems: capacity, serialize: false })) }
    })
    closeBento = () => b.disconnectAll()
    const factory = (): Decision => {
      if (!bentoLoading) bentoMisses.miss()
      return DECISION
    }
    for (const p of pairs) await b.getOrSet({ key: specKey(p.g, p.u), factory, ttl: '1h' })
    bentoLoading = false
    contenders.push({
      id: 'e',
      name: 'bentocache (memory): await getOrSet (hit)',
      param: rotation(order, start(4)),
      call: (p) => b.getOrSet({ key: `auth:gen:${p.g}:user:${p.u}:access`, factory, ttl: '1h' }),
      check: bentoMisses.check
    })
  }

  // f, g, h. the engine
  const engine = engineFor(capacity, 1024)
  fill(engine, pairs)
  if (engine.getStats().totalEntries !== pairs.length) throw new Error('engine did not keep every entry')
  const handle = engine.kind('generation')
  {
    const m = missCounter('engine lookup')
    contenders.push({
      id: 'f',
      name: 'engine: lookup(handle, g, u) (sync)',
      param: rotation(order, start(5)),
      call: (p) => { if (engine.lookup(handle, p.g, p.u) === undefined) m.miss() },
      check: m.check
    })
  }
  // i. the same lookup under the plain CLOCK policy (no frequency sketch to bump): the cost of TinyLFU on a hit.
  const clock = engineFor(capacity, 1024, 'clock')
  fill(clock, pairs)
  const clockHandle = clock.kind('generation')
  {
    const m = missCounter('engine lookup, clock')
    contenders.push({
      id: 'i',
      name: "engine, evictionPolicy 'clock': lookup(handle, g, u)",
      param: rotation(order, start(8)),
      call: (p) => { if (clock.lookup(clockHandle, p.g, p.u) === undefined) m.miss() },
      check: m.check
    })
  }
  if (!full) {
    const m = missCounter('engine getGenerationAccess')
    contenders.push({
      id: 'g',
      name: 'engine: getGenerationAccess(g, u) (sync)',
      param: rotation(order, start(6)),
      call: (p) => { if (!engine.getGenerationAccess(p.g, p.u).hit) m.miss() },
      check: m.check
    })
    const before = { misses: 0 }
    contenders.push({
      id: 'h',
      name: "engine: await getOrLoad('generation', u, g)",
      param: rotation(order, start(7)),
      call: (p) => engine.getOrLoad('generation', p.u, p.g),
      check: () => {
        const misses = engine.getStats().misses
        if (misses !== before.misses) throw new Error(`engine getOrLoad: ${misses - before.misses} misses during a hit measurement`)
      }
    })
  }
  return {
    contenders,
    engine,
    close: async () => {
      engine.close()
      clock.close()
      if (closeBento !== undefined) await closeBento()
    }
  }
}

// ------------------------------------------------------------- part 2, 3

function flatnessContenders (data: DataSet, engine: AuthzCache, floor: Map<string, Decision>, workingSet: number): Contender[] {
  const order = data.order.slice(0, workingSet)
  const handle = engine.kind('generation')
  const me = missCounter('flatness engine')
  const mf = missCounter('flatness floor')
  return [
    {
      id: 'floor',
      name: 'floor',
      param: rotation(order, 11),
      call: (p) => { if (floor.get(`auth:gen:${p.g}:user:${p.u}:access`) === undefined) mf.miss() },
      check: mf.check
    },
    {
      id: 'engine',
      name: 'engine lookup',
      param: rotation(order, 13),
      call: (p) => { if (engine.lookup(handle, p.g, p.u) === undefined) me.miss() },
      check: me.check
    }
  ]
}

function percentileOf (values: number[], p: number): number {
  const s = values.slice().sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]
}

// ------------------------------------------------------------- part 4

let sink = 0

async function measureFn (fn: () => void, minCpuTimeMs: number): Promise<number> {
  const stats = await (measure as unknown as (f: () => void, o: Record<string, unknown>) => Promise<Stats>)(fn, { min_cpu_time: minCpuTimeMs * 1e6, gc: false })
  return stats.p50
}

// ------------------------------------------------------------------ run

function packageRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    if (existsSync(join(dir, 'node_modules', 'mitata', 'package.json'))) return dir
    const parent = dirname(dir)
    if (parent === dir) return process.cwd()
    dir = parent
  }
}

function versionOf (root: string, name: string): string {
  try {
    return (JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version
  } catch {
    return 'unknown'
  }
}

export async function run (options: EngineBenchOptions = {}): Promise<EngineBenchResult> {
  const rounds = options.rounds ?? 7
  const minCpu = options.minCpuTimeMs ?? 60
  const log = options.log ?? noop
  const t0 = performance.now()
  const startedAt = new Date().toISOString()
  const root = packageRoot()
  const packages: Record<string, string> = {}
  for (const name of ['mitata', 'quick-lru', 'lru-cache', 'async-cache-dedupe', 'bentocache']) packages[name] = versionOf(root, name)
  packages['fastify-authz-cache'] = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version
  const cpus = os.cpus()

  // Part 1: 10,000 entries, capacity 20,000.
  log('part 1: hit with 10,000 entries')
  const hitData = dataSet(10_000, 1)
  const part1 = await hitContenders(hitData, 20_000, false)
  const hit = await interleaved(part1.contenders, rounds, minCpu, log, 'hit')
  const engineHitNs = hit.find((c) => c.id === 'f')?.medianNs ?? NaN
  await part1.close()

  // Part 1b: full caches (capacity 10,000 = entries).
  log('part 1b: hit with 10,000 entries in full caches')
  const part1b = await hitContenders(hitData, 10_000, true)
  const hitFull = await interleaved(part1b.contenders, rounds, minCpu, log, 'hit (full)')
  await part1b.close()

  // Part 4 (small, before the big heap exists): performance.now() and friends.
  log('part 4: sampling cost')
  const ring = new Float64Array(2048)
  let next = 0
  let count = 0
  let sum = 0
  let total = 0
  const record = (ms: number): void => {
    ring[next] = ms
    next = (next + 1) % 2048
    if (count < 2048) count++
    sum += ms
    total++
  }
  const nowRounds: number[] = []
  const dateRounds: number[] = []
  const recordRounds: number[] = []
  for (let r = 0; r < rounds; r++) {
    nowRounds.push(await measureFn(() => { sink += performance.now() }, minCpu / 2))
    dateRounds.push(await measureFn(() => { sink += Date.now() }, minCpu / 2))
    recordRounds.push(await measureFn(() => { record(sink & 7) }, minCpu / 2))
  }
  sink += sum + total
  const performanceNowNs = median(nowRounds)
  const dateNowNs = median(dateRounds)
  const recordSampleNs = median(recordRounds)
  const amortized = (2 * performanceNowNs + recordSampleNs) / ACCESS_SAMPLE_EVERY

  // Part 2: flatness, 1k / 100k / 1M entries. The hot-set rows keep the working
  // set constant (1,000 keys), so they show what the cache size alone costs.
  const sizes = [1_000, 100_000, 1_000_000]
  const maxEntries = 2_000_000
  const maxSizeMb = 4096
  const buildMs: Record<string, number> = {}
  const flat: Array<{ n: number, data: DataSet, engine: AuthzCache, floor: Map<string, Decision> }> = []
  for (const n of sizes) {
    log(`part 2: building ${n.toLocaleString('en-US')} entries`)
    const data = dataSet(n, n + 7)
    const engine = engineFor(maxEntries, maxSizeMb)
    const b0 = performance.now()
    fill(engine, data.pairs)
    buildMs[String(n)] = Math.round(performance.now() - b0)
    if (engine.getStats().totalEntries !== n) throw new Error(`engine kept ${engine.getStats().totalEntries} of ${n} entries`)
    // The floor shares the engine's key strings (memory); lookups still build fresh keys.
    const floor = new Map<string, Decision>()
    for (const key of engine.keys()) floor.set(key, DECISION)
    flat.push({ n, data, engine, floor })
  }
  const flatRows = async (hot: boolean): Promise<FlatnessRow[]> => {
    const contenders: Contender[] = []
    const sets: number[] = []
    for (const f of flat) {
      const ws = hot ? Math.min(f.n, HOT_SET) : f.n
      sets.push(ws)
      for (const c of flatnessContenders(f.data, f.engine, f.floor, ws)) {
        contenders.push({ ...c, id: `${c.id}@${f.n}`, name: `${c.name} ${f.n}` })
      }
    }
    const results = await interleaved(contenders, Math.max(3, rounds - 2), minCpu, log, hot ? 'flatness (hot set)' : 'flatness (all entries)')
    return flat.map((f, i) => {
      const floorNs = results[2 * i].medianNs
      const engineNs = results[2 * i + 1].medianNs
      return { entries: f.n, workingSet: sets[i], engineNs, floorNs, engineVsFloor: r2(engineNs / floorNs) }
    })
  }
  const allEntries = await flatRows(false)
  const hotSet = await flatRows(true)
  const growth = (rows: FlatnessRow[], key: 'engineNs' | 'floorNs'): number => r2(rows[rows.length - 1][key] / rows[0][key])

  // Part 3: invalidate one user's 20 entries in the 1M cache.
  log('part 3: invalidateUserData in the 1,000,000-entry cache')
  const big = flat[flat.length - 1]
  const warmup = 10
  const repetitions = 50
  const times: number[] = []
  for (let r = 0; r < warmup + repetitions; r++) {
    const u = (r * 7919) % (big.n / ENTRIES_PER_USER)
    const own = big.data.pairs.slice(u * ENTRIES_PER_USER, (u + 1) * ENTRIES_PER_USER)
    const userId = fresh(own[0].u)
    const s = process.hrtime.bigint()
    const removed = big.engine.invalidateUserData(userId)
    const e = process.hrtime.bigint()
    if (removed !== ENTRIES_PER_USER) throw new Error(`invalidateUserData removed ${removed}, expected ${ENTRIES_PER_USER}`)
    if (r >= warmup) times.push(Number(e - s) / 1000)
    fill(big.engine, own)
  }
  const invMedian = median(times)
  for (const f of flat) f.engine.close()
  flat.length = 0

  const fRow = hit.find((c) => c.id === 'f')
  const aRow = hit.find((c) => c.id === 'a')
  const dRow = hit.find((c) => c.id === 'd')
  const fFull = hitFull.find((c) => c.id === 'f')
  const aFull = hitFull.find((c) => c.id === 'a')
  const targets: TargetResult[] = []
  const target = (name: string, value: number, unit: string, threshold: number, atLeast = false): void => {
    targets.push({ name, value: r2(value), unit, threshold, atLeast, pass: atLeast ? value >= threshold : value <= threshold })
  }
  target('engine sync hit (f) / floor (a), 10k entries', (fRow?.medianNs ?? NaN) / (aRow?.medianNs ?? NaN), 'x', 1.5)
  target('engine sync hit (f) / floor (a), 10k entries, full cache', (fFull?.medianNs ?? NaN) / (aFull?.medianNs ?? NaN), 'x', 1.5)
  const iRow = hit.find((c) => c.id === 'i')
  const iFull = hitFull.find((c) => c.id === 'i')
  target('tinylfu hit (f) / clock hit (i), 10k entries', (fRow?.medianNs ?? NaN) / (iRow?.medianNs ?? NaN), 'x', 1.2)
  target('tinylfu hit (f) / clock hit (i), 10k entries, full cache', (fFull?.medianNs ?? NaN) / (iFull?.medianNs ?? NaN), 'x', 1.2)
  target('async-cache-dedupe hit (d) / engine sync hit (f)', (dRow?.medianNs ?? NaN) / (fRow?.medianNs ?? NaN), 'x', 2, true)
  target('engine hit growth 1k -> 1M, rotation over all entries', (growth(allEntries, 'engineNs') - 1) * 100, '%', 20)
  target('engine hit growth 1k -> 1M, the same hot set of 1k keys', (growth(hotSet, 'engineNs') - 1) * 100, '%', 20)
  target('invalidateUserData, 20 of 1M entries (median)', invMedian / 1000, 'ms', 1)

  return {
    startedAt,
    durationMs: Math.round(performance.now() - t0),
    machine: {
      cpu: cpus[0]?.model ?? 'unknown',
      cores: cpus.length,
      availableParallelism: os.availableParallelism(),
      totalMemoryGb: r2(os.totalmem() / 1024 ** 3),
      platform: `${os.platform()} ${os.release()}`,
      arch: os.arch(),
      node: process.version,
      v8: process.versions.v8
    },
    packages,
    method: {
      rounds,
      minCpuTimeMsPerMeasurement: minCpu,
      statistic: 'median over interleaved rounds of mitata p50 (each sample = mean of a 4,096-call batch); contender order rotates each round',
      freshIds: 'each timed call gets a new (generationId, userId) pair made outside the timed region with JSON.parse(\'"\' + id + \'"\'): new flat strings, no cached hash, never the stored objects',
      keyPattern: 'rotation over a shuffled array of every stored pair (n/20 users x 20 generations each); hot set = the first 1,000 pairs of that shuffle, the same working set at every cache size',
      value: DECISION
    },
    hit: { entries: hitData.pairs.length, capacity: 20_000, contenders: hit },
    hitFull: { entries: hitData.pairs.length, capacity: 10_000, contenders: hitFull },
    flatness: {
      maxEntries,
      maxSizeMb,
      buildMs,
      allEntries,
      hotSet,
      growthAllEntries: growth(allEntries, 'engineNs'),
      floorGrowthAllEntries: growth(allEntries, 'floorNs'),
      growthHotSet: growth(hotSet, 'engineNs'),
      floorGrowthHotSet: growth(hotSet, 'floorNs')
    },
    invalidation: {
      cacheEntries: big.n,
      entriesPerUser: ENTRIES_PER_USER,
      repetitions,
      warmup,
      medianUs: r2(invMedian),
      p90Us: r2(percentileOf(times, 90)),
      minUs: r2(Math.min(...times)),
      maxUs: r2(Math.max(...times)),
      perEntryUs: r2(invMedian / ENTRIES_PER_USER)
    },
    sampling: {
      sampleEvery: ACCESS_SAMPLE_EVERY,
      performanceNowNs: r2(performanceNowNs),
      dateNowNs: r2(dateNowNs),
      recordSampleNs: r2(recordSampleNs),
      amortizedPerHitNs: r2(amortized),
      shareOfEngineHitPercent: r2((amortized / engineHitNs) * 100),
      note: 'lib/ cannot be changed here, so the hit is not measured without sampling; the cost is computed from performance.now() (two calls per sampled hit) and a replica of the ring-buffer write, divided by the sampling period. Every hit (sampled or not) also calls the clock option (Date.now by default) once for the expiry check.'
    },
    targets
  }
}

// ---------------------------------------------------------------- print

function pad (s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length)
}

function lpad (s: string, n: number): string {
  return s.length >= n ? s : ' '.repeat(n - s.length) + s
}

function ns (value: number): string {
  return value >= 1000 ? `${(value / 1000).toFixed(2)} us` : `${value.toFixed(1)} ns`
}

export function formatResult (r: EngineBenchResult): string {
  const lines: string[] = []
  const m = r.machine
  lines.push(`CPU: ${m.cpu} (${m.cores} cores), ${m.totalMemoryGb} GB, ${m.platform} ${m.arch}`)
  lines.push(`Node ${m.node} (V8 ${m.v8}); ${Object.entries(r.packages).map(([k, v]) => `${k} ${v}`).join(', ')}`)
  lines.push(`${r.method.rounds} interleaved rounds, >= ${r.method.minCpuTimeMsPerMeasurement} ms timed per measurement; ${r.method.statistic}`)
  lines.push('')
  const table = (title: string, rows: ContenderResult[]): void => {
    lines.push(title)
    lines.push(`  ${pad('', 3)}${pad('contender', 46)}${lpad('median', 11)}${lpad('min', 11)}${lpad('max', 11)}${lpad('x floor', 9)}`)
    for (const c of rows) {
      lines.push(`  ${pad(c.id, 3)}${pad(c.name, 46)}${lpad(ns(c.medianNs), 11)}${lpad(ns(c.minNs), 11)}${lpad(ns(c.maxNs), 11)}${lpad(c.vsFloor.toFixed(2), 9)}`)
    }
    lines.push('')
  }
  table(`1. Hit, ${r.hit.entries.toLocaleString('en-US')} entries, capacity ${r.hit.capacity.toLocaleString('en-US')} (ns per op, per-round p50)`, r.hit.contenders)
  table(`1b. Hit, full cache: ${r.hitFull.entries.toLocaleString('en-US')} entries, capacity ${r.hitFull.capacity.toLocaleString('en-US')}`, r.hitFull.contenders)
  const f = r.flatness
  lines.push(`2. Flatness: engine sync hit vs entries (maxEntries ${f.maxEntries.toLocaleString('en-US')}, maxSizeMb ${f.maxSizeMb}; build ms: ${Object.entries(f.buildMs).map(([k, v]) => `${Number(k).toLocaleString('en-US')}: ${v}`).join(', ')})`)
  lines.push(`  ${pad('entries', 12)}${pad('working set', 24)}${lpad('engine', 11)}${lpad('floor', 11)}${lpad('engine/floor', 14)}`)
  for (const [label, rows] of [['all entries', f.allEntries], ['hot set', f.hotSet]] as const) {
    for (const row of rows) {
      lines.push(`  ${pad(row.entries.toLocaleString('en-US'), 12)}${pad(`${row.workingSet.toLocaleString('en-US')} (${label})`, 24)}${lpad(ns(row.engineNs), 11)}${lpad(ns(row.floorNs), 11)}${lpad(row.engineVsFloor.toFixed(2), 14)}`)
    }
  }
  lines.push(`  growth 1k -> 1M: engine x${f.growthAllEntries} (floor x${f.floorGrowthAllEntries}) over all entries; engine x${f.growthHotSet} (floor x${f.floorGrowthHotSet}) hot set`)
  lines.push('')
  const i = r.invalidation
  lines.push(`3. invalidateUserData: ${i.entriesPerUser} entries of one user in a ${i.cacheEntries.toLocaleString('en-US')}-entry cache, ${i.repetitions} reps (+${i.warmup} warmup)`)
  lines.push(`  median ${i.medianUs} us, p90 ${i.p90Us} us, min ${i.minUs} us, max ${i.maxUs} us (${i.perEntryUs} us per entry)`)
  lines.push('')
  const s = r.sampling
  lines.push(`4. Stats sampling (1 hit in ${s.sampleEvery} timed with performance.now())`)
  lines.push(`  performance.now() ${ns(s.performanceNowNs)}, Date.now() ${ns(s.dateNowNs)}, record one sample ${ns(s.recordSampleNs)}`)
  lines.push(`  amortized per hit: ${ns(s.amortizedPerHitNs)} = ${s.shareOfEngineHitPercent}% of the engine sync hit`)
  lines.push('')
  lines.push('Targets')
  for (const t of r.targets) {
    lines.push(`  ${t.pass ? 'PASS' : 'FAIL'}  ${pad(t.name, 58)} ${t.value} ${t.unit} (${t.atLeast ? '>=' : '<='} ${t.threshold})`)
  }
  lines.push('')
  lines.push(`Total ${(r.durationMs / 1000).toFixed(1)} s`)
  return lines.join('\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await run({ log: (line) => process.stderr.write(line + '\n') })
  process.stdout.write(formatResult(result) + '\n\n')
  process.stdout.write(JSON.stringify(result, null, 2) + '\n')
}
