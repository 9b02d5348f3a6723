/**
 * Hit ratio of the eviction policy: a seeded simulator that replays the same
 * traces into the real engine (AuthzCache with `evictionPolicy: 'tinylfu'`
 * and with `'clock'`), into lru-cache, and into Belady's offline optimum.
 *
 *   npm run build && node dist/bench/hit-ratio.js [--requests N] [--only name,name] [--denials N]
 *
 * `run()` returns every number as a JSON-able object; run directly, the file
 * prints markdown tables and the JSON. `--requests` (default 4,000,000) is
 * the length of every hit-ratio trace (1-5 below; the key spaces and the
 * capacities stay); `--denials` (default 100,000) sizes the denial scenario;
 * `--only` picks traces by name: zipf-0.8, zipf-0.8-50k, scan, zipf-1.0,
 * perf-2k, perf-10k, denials.
 *
 * Every contender starts cold, sees every request of the trace in order and
 * counts every request; on a miss the key is inserted (demand paging):
 * - engine: `new AuthzCache({ maxEntries: capacity, maxSizeMb: 1_000_000,
 *   cleanupIntervalSeconds: 0, ttlJitterPercent: 0, authTtlSeconds: 86_400,
 *   evictionPolicy, now, random })` with a fixed clock (no entry ever
 *   expires, so only eviction decides) and a seeded random source (the
 *   policy seeds its hashes from it: runs repeat exactly), a hit when
 *   `getGenerationAccess(g, u).hit`, else
 *   `setGenerationAccess(g, u, DECISION)`. An engine that does not know the
 *   `evictionPolicy` option (FST_AUTHZ_OPTIONS) is built without it: the
 *   report says so, both engine columns are then its default policy, and the
 *   targets on TinyLFU are misses whatever the numbers.
 * - lru-cache: `new LRUCache({ max: capacity })` keyed by the SPEC key.
 * - Belady: exact OPT under demand paging with the same capacity. A
 *   backward pass gives each request the index of the key's next request;
 *   on a miss into a full cache the cached key whose next request is
 *   furthest (or never) goes. The cache is an indexed binary max-heap on
 *   the next-request index (typed arrays, no garbage per request): O(log
 *   capacity) a request. No demand-paging policy can beat it; one that may
 *   refuse to cache a missed key (TinyLFU's admission) can, by at most what
 *   one extra slot is worth.
 *
 * Keys are ranks (0 = most popular) in a Uint32Array; rank r is the pair
 * `makePairs(n, 7001)[r]` (seeded UUIDs, 20 generations a user) except in
 * traces 5 and 6, which build their own pairs. The seeds are in the report.
 *
 * Traces
 * 1. zipf-0.8: Zipf(0.8) over 1,000,000 keys, 4,000,000 requests (seed
 *    8001), capacity 10,000.
 * 2. zipf-0.8-50k: the same trace, capacity 50,000.
 * 3. scan: the first 3,000,000 requests of trace 1 with 100 bursts of
 *    10,000 one-shot keys (keys never requested before or after: a crawler
 *    walking distinct ids once) cut in: 1,000,000 Zipf requests of warm-up,
 *    then 100 times (a burst, then 10,000 Zipf requests), then the last
 *    1,000,000 Zipf requests; 25% of the requests are the scan. Capacity
 *    10,000. Scaled with `--requests`: bursts = round(25% of the requests /
 *    10,000), the warm-up and the tail take what is left, half each. Hot-key
 *    survival: in the 10,000 Zipf requests after each burst, the first
 *    request of each of the 100 most popular keys (ranks 0-99) that comes
 *    up; the share of those that hit is the share of the hot keys that were
 *    still cached when the burst ended (a key first requested late in the
 *    window may have been evicted by Zipf traffic since, which only lowers
 *    it; a hot key never requested before the window is left out: its miss
 *    is compulsory). Also given: the hit ratio of every request to a hot
 *    key in those windows, and as a baseline the first-request measure in
 *    10 windows of 10,000 requests at the end of the warm-up, where no burst
 *    came before.
 * 4. zipf-1.0: Zipf(1.0) over 1,000,000 keys, 4,000,000 requests (seed
 *    8002), capacity 10,000.
 * 5. perf-2k, perf-10k: the workload of examples/perf.ts. 5,000 users in
 *    100 teams (user i in team i % 100), 20,000 generations (generation j in
 *    team j % 100, 200 a team). A page view is a user drawn Zipf(1.1) over
 *    all users opening the k-th generation of their team, k drawn Zipf(1.2)
 *    over 200, and makes 20-60 requests for the same (generation, user)
 *    key; 16 views run at once, their requests interleaved round robin (the
 *    CLI's `--concurrency 16`). Seed 0x5eed; 4,000,000 requests; capacities
 *    2,000 and 10,000. The key is the (generation, user) pair, rank
 *    user * 200 + k. The report adds the hit ratio of the first request of
 *    each view (the later ones hit under any policy).
 * 6. denials ("denials must not crowd out grants"): 1,000 users each
 *    holding 5 granted generations (5,000 grant keys, half the 10,000
 *    capacity) and one user checking 100,000 distinct generations, every one
 *    a denial. Requests alternate: a grant check (a user drawn uniformly,
 *    then one of their 5 ids, seed 9001), a denial check (the next new id);
 *    200,000 in all. The engine resolves through a resolver (`resolvers:
 *    { generation }`, `negativeTtlSeconds: 30`, fixed clock) and
 *    `await getOrLoad('generation', userId, id)`; the resolver answers an
 *    already resolved promise of `{ granted: false }` for the denial user
 *    and `{ granted: true }` for everyone else, and counts its calls. The
 *    measure: grant resolver calls beyond the first load of each grant key.
 *    lru-cache and Belady replay the same trace (their grant misses beyond
 *    the first).
 *
 * Times are the wall time of each contender's pass over the trace (Belady's
 * includes its backward pass), one run each, for scale only.
 */
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { LRUCache } from 'lru-cache'
import { AuthzCache, type CacheOptions, type Decision, type Resolver } from '../lib/index.js'
import { DECISION, makePairs, specKey, type Pair } from './support/pairs.js'
import { prng, uniform, uuids } from './support/random.js'
import { fixed, int, table, targetsTable, type Target } from './support/format.js'
import { describeMachine, startRun, type RunInfo } from './support/machine.js'

const UNBOUNDED_MB = 1_000_000
/** The engine's clock: fixed, so no entry expires and only eviction decides. */
const FIXED_NOW = 1_700_000_000_000
const DEFAULT_REQUESTS = 4_000_000
const ZIPF_KEYS = 1_000_000
const SCAN_SHARE = 0.25
const SCAN_BURST = 10_000
const BASELINE_WINDOWS = 10
/** Ranks 0..HOT_KEYS-1 are the hot keys of the scan trace. */
const HOT_KEYS = 100

const PERF_USERS = 5000
const PERF_TEAMS = 100
const PERF_GENERATIONS = 20_000
const PERF_PER_TEAM = PERF_GENERATIONS / PERF_TEAMS
const PERF_USER_SKEW = 1.1
const PERF_GENERATION_SKEW = 1.2
const VIEW_MIN = 20
const VIEW_MAX = 60
const PERF_CONCURRENCY = 16

const GRANT_USERS = 1000
const IDS_PER_USER = 5
const DEFAULT_DENIALS = 100_000
const DENIAL_CAPACITY = 10_000

/** Every seed of the traces; the report prints them. */
export const SEEDS = Object.freeze({ pairs: 7001, zipf08: 8001, zipf10: 8002, perf: 0x5eed, denials: 9001, engine: 6001 })

/** Targets, in percentage points of hit ratio over lru-cache, and the hot-key survival share. */
const ZIPF08_GAIN_TARGET = 7
const SCAN_GAIN_TARGET = 5
const HOT_SURVIVAL_TARGET = 90
const ZIPF10_GAIN_TARGET = 3
/** TinyLFU's extra grant resolver calls, at most this share of CLOCK's. */
const DENIAL_EXTRA_SHARE_TARGET = 0.01
/** The same over the whole trace, cold start included. */
const DENIAL_EXTRA_SHARE_COLD_TARGET = 0.05

export const TRACE_NAMES = ['zipf-0.8', 'zipf-0.8-50k', 'scan', 'zipf-1.0', 'perf-2k', 'perf-10k', 'denials'] as const
export type TraceName = typeof TRACE_NAMES[number]

// ------------------------------------------------------------------ types

export type Policy = 'tinylfu' | 'clock'
export type Contender = Policy | 'lru' | 'belady'
const CONTENDERS: readonly Contender[] = ['tinylfu', 'clock', 'lru', 'belady']

/**
 * What became of `evictionPolicy`: `applied` when `cache.options` shows it,
 * `accepted` when the constructor took it without showing it, `rejected`
 * when the engine does not know the option (it then ran its default policy).
 */
export type PolicyStatus = 'applied' | 'accepted' | 'rejected'

export interface HitRatioBenchOptions {
  /** Requests of each hit-ratio trace (1-5). Default 4,000,000. */
  requests?: number
  /** Denied ids of the denial scenario (as many grant checks come between them). Default 100,000. */
  denials?: number
  /** Length of a scan burst and of the window after it. Default 10,000. */
  scanBurst?: number
  /** The traces to run. Default all. */
  only?: TraceName[]
  log?: (line: string) => void
}

export interface Measured {
  hits: number
  hitPercent: number
  ms: number
}

export interface HotKeyResult {
  /** Of the hot keys requested in the window after a burst, the share whose first request there hit. */
  firstRequestHitPercent: number
  firstRequests: number
  /** Every request to a hot key in the windows after the bursts. */
  hitPercent: number
  requests: number
  /** The first-request measure in windows at the end of the warm-up (no burst before them). */
  baselineFirstRequestHitPercent: number
}

export interface TraceResult {
  name: TraceName
  description: string
  requests: number
  /** Distinct keys requested: each misses at least once. */
  distinctKeys: number
  capacity: number
  contenders: Record<Contender, Measured>
  /** Percentage points. */
  tinylfuMinusLru: number
  clockMinusLru: number
  scan?: { bursts: number, burst: number, warmup: number, scanRequests: number, hot: Record<Contender, HotKeyResult> }
  views?: { views: number, firstRequestHitPercent: Record<Contender, number> }
}

export interface DenialContender extends Measured {
  /** Grant misses beyond the first load of each grant key (for the engine: resolver calls). */
  extraGrantMisses: number
  /** Grant misses in the second half of the trace (every grant key was loaded long before: all beyond the first load). */
  secondHalfGrantMisses: number
  grantMisses: number
  denialMisses: number
}

export interface DenialResult {
  grantUsers: number
  idsPerUser: number
  denials: number
  grantRequests: number
  distinctGrantKeys: number
  capacity: number
  contenders: Record<Contender, DenialContender>
}

export interface HitRatioBenchResult extends RunInfo {
  seeds: typeof SEEDS
  policies: Record<Policy, PolicyStatus>
  requests: number
  traces: TraceResult[]
  denials?: DenialResult
  targets: Target[]
}

// ----------------------------------------------------------------- traces

/** A Zipf(`skew`) sampler over ranks 0..n-1 (0 the most frequent): P(k) is proportional to 1 / (k + 1)^skew. */
function zipfSampler (n: number, skew: number, random: () => number): () => number {
  const cdf = new Float64Array(n)
  let sum = 0
  for (let k = 0; k < n; k++) {
    sum += 1 / Math.pow(k + 1, skew)
    cdf[k] = sum
  }
  return () => {
    const u = random() * sum
    let lo = 0
    let hi = n - 1
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (cdf[mid] < u) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

/** Key ranks of a seeded Zipf trace (the same draws as bench/sweep.ts's for the same seed). */
export function zipfTrace (keys: number, requests: number, skew: number, seed: number): Uint32Array {
  const next = zipfSampler(keys, skew, uniform(prng(seed)))
  const trace = new Uint32Array(requests)
  for (let i = 0; i < requests; i++) trace[i] = next()
  return trace
}

interface ScanLayout {
  trace: Uint32Array
  keySpace: number
  bursts: number
  burst: number
  warmup: number
  scanRequests: number
  /** First index of each burst; its window is the `burst` requests after it. */
  burstStarts: Uint32Array
}

/** Zipf requests of the scan trace, for `requests` in all. */
function scanShape (requests: number, burst: number): { bursts: number, zipfRequests: number, warmup: number } {
  const bursts = Math.max(1, Math.round((requests * SCAN_SHARE) / burst))
  const zipfRequests = requests - bursts * burst
  const warmup = Math.floor((zipfRequests - bursts * burst) / 2)
  if (warmup < 0) throw new RangeError(`scan trace: ${requests} requests leave no room for ${bursts} bursts of ${burst} and their windows`)
  return { bursts, zipfRequests, warmup }
}

/** The scan trace (see the top of the file): `zipf` in order, bursts of one-shot keys `firstScanKey`... cut in. */
function scanTrace (zipf: Uint32Array, requests: number, burst: number, firstScanKey: number): ScanLayout {
  const { bursts, zipfRequests, warmup } = scanShape(requests, burst)
  if (zipf.length < zipfRequests) throw new RangeError('scan trace: the Zipf trace is too short')
  const trace = new Uint32Array(requests)
  const burstStarts = new Uint32Array(bursts)
  let at = 0
  let z = 0
  let scanKey = firstScanKey
  for (; z < warmup; z++) trace[at++] = zipf[z]
  for (let b = 0; b < bursts; b++) {
    burstStarts[b] = at
    for (let j = 0; j < burst; j++) trace[at++] = scanKey++
    for (let j = 0; j < burst; j++) trace[at++] = zipf[z++]
  }
  while (z < zipfRequests) trace[at++] = zipf[z++]
  return { trace, keySpace: scanKey, bursts, burst, warmup, scanRequests: bursts * burst, burstStarts }
}

interface PerfLayout {
  trace: Uint32Array
  pairs: Pair[]
  /** 1 at the first request of each page view. */
  viewStarts: Uint8Array
  views: number
}

/** The perf workload of examples/perf.ts as key ranks user * 200 + k (see the top of the file). */
function perfTrace (requests: number, seed: number): PerfLayout {
  const random = uniform(prng(seed))
  const pickUser = zipfSampler(PERF_USERS, PERF_USER_SKEW, random)
  const pickGeneration = zipfSampler(PERF_PER_TEAM, PERF_GENERATION_SKEW, random)
  const id = uuids(seed + 1)
  const users: string[] = []
  for (let i = 0; i < PERF_USERS; i++) users.push(id())
  const generations: string[] = []
  for (let j = 0; j < PERF_GENERATIONS; j++) generations.push(id())
  const pairs: Pair[] = []
  for (let user = 0; user < PERF_USERS; user++) {
    for (let k = 0; k < PERF_PER_TEAM; k++) pairs.push({ g: generations[(user % PERF_TEAMS) + PERF_TEAMS * k], u: users[user] })
  }
  const trace = new Uint32Array(requests)
  const viewStarts = new Uint8Array(requests)
  const key = new Uint32Array(PERF_CONCURRENCY)
  const left = new Uint32Array(PERF_CONCURRENCY)
  let views = 0
  for (let i = 0; i < requests; i++) {
    const slot = i % PERF_CONCURRENCY
    if (left[slot] === 0) {
      const user = pickUser()
      key[slot] = user * PERF_PER_TEAM + pickGeneration()
      left[slot] = VIEW_MIN + Math.floor(random() * (VIEW_MAX - VIEW_MIN + 1))
      viewStarts[i] = 1
      views++
    }
    trace[i] = key[slot]
    left[slot]--
  }
  return { trace, pairs, viewStarts, views }
}

interface DenialLayout {
  trace: Uint32Array
  pairs: Pair[]
  /** Ranks below this are grant keys; the others are the denial user's. */
  grantKeys: number
  denier: string
}

/** The denial scenario's trace: grant check, denial check, alternately (see the top of the file). */
function denialTrace (denials: number, seed: number): DenialLayout {
  const id = uuids(seed)
  const pairs: Pair[] = []
  for (let user = 0; user < GRANT_USERS; user++) {
    const u = id()
    for (let j = 0; j < IDS_PER_USER; j++) pairs.push({ g: id(), u })
  }
  const grantKeys = pairs.length
  const denier = id()
  for (let d = 0; d < denials; d++) pairs.push({ g: id(), u: denier })
  const next = prng(seed + 1)
  const trace = new Uint32Array(2 * denials)
  for (let d = 0; d < denials; d++) {
    trace[2 * d] = (next() % GRANT_USERS) * IDS_PER_USER + (next() % IDS_PER_USER)
    trace[2 * d + 1] = grantKeys + d
  }
  return { trace, pairs, grantKeys, denier }
}

function distinctKeys (trace: Uint32Array, keySpace: number): number {
  const seen = new Uint8Array(keySpace)
  let n = 0
  for (let i = 0; i < trace.length; i++) {
    if (seen[trace[i]] === 0) {
      seen[trace[i]] = 1
      n++
    }
  }
  return n
}

// ------------------------------------------------------------- contenders

function measured (hits: number, requests: number, ms: number): Measured {
  return { hits, hitPercent: (hits / requests) * 100, ms: Math.round(ms) }
}

/** The engine's options in every scenario (a fixed clock, a seeded random source); `extra` adds resolvers and the negative TTL. */
function engineOptions (capacity: number, extra: CacheOptions = {}): CacheOptions {
  return {
    maxEntries: capacity,
    maxSizeMb: UNBOUNDED_MB,
    cleanupIntervalSeconds: 0,
    ttlJitterPercent: 0,
    authTtlSeconds: 86_400,
    now: () => FIXED_NOW,
    // The policy seeds its sketch's hashes (and its hash-flood defence) from this: seeded, two runs evict alike.
    random: uniform(prng(SEEDS.engine)),
    ...extra
  }
}

/** A cache with `evictionPolicy`, or without it when the engine does not know the option (see PolicyStatus). */
export function makeEngine (policy: Policy, capacity: number, extra: CacheOptions = {}): { cache: AuthzCache, status: PolicyStatus } {
  const options = engineOptions(capacity, extra)
  try {
    // The cast stays until CacheOptions has `evictionPolicy`.
    const cache = new AuthzCache({ ...options, evictionPolicy: policy } as CacheOptions)
    const shown = (cache.options as unknown as Record<string, unknown>).evictionPolicy
    return { cache, status: shown === policy ? 'applied' : 'accepted' }
  } catch (error) {
    const e = error as Error & { code?: string }
    if (e?.code !== 'FST_AUTHZ_OPTIONS' || !String(e.message).includes('evictionPolicy')) throw error
    return { cache: new AuthzCache(options), status: 'rejected' }
  }
}

/** The engine over `trace`; `outcome[i]` is set to 1 when request i hits. */
function engineRun (policy: Policy, pairs: Pair[], trace: Uint32Array, capacity: number, outcome: Uint8Array): Measured & { status: PolicyStatus } {
  const { cache, status } = makeEngine(policy, capacity)
  let hits = 0
  const t0 = performance.now()
  for (let i = 0; i < trace.length; i++) {
    const p = pairs[trace[i]]
    if (cache.getGenerationAccess(p.g, p.u).hit) {
      hits++
      outcome[i] = 1
    } else {
      cache.setGenerationAccess(p.g, p.u, DECISION)
    }
  }
  const ms = performance.now() - t0
  cache.close()
  return { ...measured(hits, trace.length, ms), status }
}

function lruRun (pairs: Pair[], trace: Uint32Array, capacity: number, outcome: Uint8Array): Measured {
  const cache = new LRUCache<string, Decision>({ max: capacity })
  let hits = 0
  const t0 = performance.now()
  for (let i = 0; i < trace.length; i++) {
    const p = pairs[trace[i]]
    const key = specKey(p.g, p.u)
    if (cache.get(key) !== undefined) {
      hits++
      outcome[i] = 1
    } else {
      cache.set(key, DECISION)
    }
  }
  return measured(hits, trace.length, performance.now() - t0)
}

/**
 * Belady's MIN under demand paging: hits of a cache of `capacity` over
 * `trace` (ranks below `keySpace`) that, when full, evicts the cached key
 * whose next request is furthest away (never counts as furthest). Sets
 * `outcome[i]` to 1 when request i hits.
 */
export function belady (trace: Uint32Array, capacity: number, keySpace: number, outcome?: Uint8Array): number {
  const n = trace.length
  if (n >= 0x7fffffff) throw new RangeError('belady: trace too long')
  const never = n
  // nextUse[i]: the index of the next request for trace[i] after i, or `never`.
  const nextUse = new Int32Array(n)
  const last = new Int32Array(keySpace).fill(never)
  for (let i = n - 1; i >= 0; i--) {
    const k = trace[i]
    nextUse[i] = last[k]
    last[k] = i
  }
  // The cache: a binary max-heap of keys on `due` (their next request), `pos` a key's slot in it or -1.
  const due = last // reused: only keys in the heap are read
  const pos = new Int32Array(keySpace).fill(-1)
  const heap = new Int32Array(Math.max(1, capacity))
  let size = 0
  const up = (at: number): void => {
    const k = heap[at]
    const d = due[k]
    while (at > 0) {
      const parent = (at - 1) >> 1
      const pk = heap[parent]
      if (due[pk] >= d) break
      heap[at] = pk
      pos[pk] = at
      at = parent
    }
    heap[at] = k
    pos[k] = at
  }
  const down = (at: number): void => {
    const k = heap[at]
    const d = due[k]
    for (;;) {
      let child = 2 * at + 1
      if (child >= size) break
      if (child + 1 < size && due[heap[child + 1]] > due[heap[child]]) child++
      const ck = heap[child]
      if (due[ck] <= d) break
      heap[at] = ck
      pos[ck] = at
      at = child
    }
    heap[at] = k
    pos[k] = at
  }
  let hits = 0
  for (let i = 0; i < n; i++) {
    const k = trace[i]
    due[k] = nextUse[i]
    const at = pos[k]
    if (at >= 0) {
      // Its next request moved from i (the smallest due in the heap) to later: it can only rise.
      hits++
      if (outcome !== undefined) outcome[i] = 1
      up(at)
    } else if (size < capacity) {
      heap[size] = k
      size++
      up(size - 1)
    } else if (capacity > 0) {
      pos[heap[0]] = -1
      heap[0] = k
      down(0)
    }
  }
  return hits
}

function beladyRun (trace: Uint32Array, capacity: number, keySpace: number, outcome: Uint8Array): Measured {
  const t0 = performance.now()
  const hits = belady(trace, capacity, keySpace, outcome)
  return measured(hits, trace.length, performance.now() - t0)
}

// --------------------------------------------------------------- analyses

/**
 * Hot-key requests in `windows` ([start, end) index pairs): every one, and
 * the first of each key in each window. Keys never requested before the
 * window are left out: their miss is compulsory, not an eviction.
 */
function hotKeyCounts (trace: Uint32Array, outcome: Uint8Array, windows: Array<[number, number]>): { firstHits: number, first: number, hits: number, total: number } {
  const firstSeen = new Int32Array(HOT_KEYS).fill(trace.length)
  for (let i = 0, left = HOT_KEYS; i < trace.length && left > 0; i++) {
    const k = trace[i]
    if (k < HOT_KEYS && firstSeen[k] === trace.length) {
      firstSeen[k] = i
      left--
    }
  }
  const seenIn = new Int32Array(HOT_KEYS).fill(-1)
  let firstHits = 0
  let first = 0
  let hits = 0
  let total = 0
  for (let w = 0; w < windows.length; w++) {
    const [start, end] = windows[w]
    for (let i = start; i < end; i++) {
      const k = trace[i]
      if (k >= HOT_KEYS || firstSeen[k] >= start) continue
      total++
      hits += outcome[i]
      if (seenIn[k] !== w) {
        seenIn[k] = w
        first++
        firstHits += outcome[i]
      }
    }
  }
  return { firstHits, first, hits, total }
}

function hotKeys (layout: ScanLayout, outcome: Uint8Array): HotKeyResult {
  const after: Array<[number, number]> = []
  for (const start of layout.burstStarts) after.push([start + layout.burst, start + 2 * layout.burst])
  const baseline: Array<[number, number]> = []
  const fit = Math.min(BASELINE_WINDOWS, Math.floor(layout.warmup / (2 * layout.burst)))
  for (let w = fit; w >= 1; w--) baseline.push([layout.warmup - w * layout.burst, layout.warmup - (w - 1) * layout.burst])
  const a = hotKeyCounts(layout.trace, outcome, after)
  const b = hotKeyCounts(layout.trace, outcome, baseline)
  return {
    firstRequestHitPercent: (a.firstHits / a.first) * 100,
    firstRequests: a.first,
    hitPercent: (a.hits / a.total) * 100,
    requests: a.total,
    baselineFirstRequestHitPercent: (b.firstHits / b.first) * 100
  }
}

function viewFirstHitPercent (viewStarts: Uint8Array, outcome: Uint8Array): number {
  let views = 0
  let hits = 0
  for (let i = 0; i < viewStarts.length; i++) {
    if (viewStarts[i] === 1) {
      views++
      hits += outcome[i]
    }
  }
  return (hits / views) * 100
}

// ------------------------------------------------------------ one trace

interface TraceSpec {
  name: TraceName
  description: string
  trace: Uint32Array
  pairs: Pair[]
  keySpace: number
  capacity: number
  scan?: ScanLayout
  perf?: PerfLayout
}

function runTrace (spec: TraceSpec, policies: Record<Policy, PolicyStatus>, log: (line: string) => void): TraceResult {
  const { trace, pairs, capacity } = spec
  const outcome = new Uint8Array(trace.length)
  const contenders = {} as Record<Contender, Measured>
  const hot = {} as Record<Contender, HotKeyResult>
  const firstOfView = {} as Record<Contender, number>
  for (const c of CONTENDERS) {
    outcome.fill(0)
    let m: Measured
    if (c === 'tinylfu' || c === 'clock') {
      const { status, ...rest } = engineRun(c, pairs, trace, capacity, outcome)
      policies[c] = status
      m = rest
    } else if (c === 'lru') {
      m = lruRun(pairs, trace, capacity, outcome)
    } else {
      m = beladyRun(trace, capacity, spec.keySpace, outcome)
    }
    contenders[c] = m
    if (spec.scan !== undefined) hot[c] = hotKeys(spec.scan, outcome)
    if (spec.perf !== undefined) firstOfView[c] = viewFirstHitPercent(spec.perf.viewStarts, outcome)
    log(`  ${c}: ${fixed(m.hitPercent)} % in ${int(m.ms)} ms`)
  }
  const result: TraceResult = {
    name: spec.name,
    description: spec.description,
    requests: trace.length,
    distinctKeys: distinctKeys(trace, spec.keySpace),
    capacity,
    contenders,
    tinylfuMinusLru: contenders.tinylfu.hitPercent - contenders.lru.hitPercent,
    clockMinusLru: contenders.clock.hitPercent - contenders.lru.hitPercent
  }
  if (spec.scan !== undefined) {
    const s = spec.scan
    result.scan = { bursts: s.bursts, burst: s.burst, warmup: s.warmup, scanRequests: s.scanRequests, hot }
  }
  if (spec.perf !== undefined) result.views = { views: spec.perf.views, firstRequestHitPercent: firstOfView }
  return result
}

// ------------------------------------------------------- denial scenario

async function engineDenials (policy: Policy, layout: DenialLayout, capacity: number, outcome: Uint8Array): Promise<{ hits: number, ms: number, grantCalls: number, denialCalls: number, status: PolicyStatus }> {
  let grantCalls = 0
  let denialCalls = 0
  const granted = Promise.resolve({ granted: true })
  const denied = Promise.resolve({ granted: false })
  const generation: Resolver = ({ userId }) => {
    if (userId === layout.denier) {
      denialCalls++
      return denied
    }
    grantCalls++
    return granted
  }
  const { cache, status } = makeEngine(policy, capacity, { negativeTtlSeconds: 30, resolvers: { generation } })
  const { trace, pairs } = layout
  let hits = 0
  const t0 = performance.now()
  for (let i = 0; i < trace.length; i++) {
    const p = pairs[trace[i]]
    const calls = grantCalls + denialCalls
    await cache.getOrLoad('generation', p.u, p.g)
    if (grantCalls + denialCalls === calls) {
      hits++
      outcome[i] = 1
    }
  }
  const ms = performance.now() - t0
  cache.close()
  return { hits, ms, grantCalls, denialCalls, status }
}

async function runDenials (denials: number, policies: Record<Policy, PolicyStatus>, log: (line: string) => void): Promise<DenialResult> {
  const layout = denialTrace(denials, SEEDS.denials)
  const { trace, grantKeys } = layout
  const n = trace.length
  const isGrant = (i: number): boolean => trace[i] < grantKeys
  let grantRequests = 0
  const seen = new Uint8Array(grantKeys)
  let distinctGrantKeys = 0
  for (let i = 0; i < n; i++) {
    if (!isGrant(i)) continue
    grantRequests++
    if (seen[trace[i]] === 0) {
      seen[trace[i]] = 1
      distinctGrantKeys++
    }
  }
  const outcome = new Uint8Array(n)
  const misses = (): { grantMisses: number, denialMisses: number, secondHalfGrantMisses: number } => {
    let grantMisses = 0
    let denialMisses = 0
    let secondHalfGrantMisses = 0
    for (let i = 0; i < n; i++) {
      if (outcome[i] === 1) continue
      if (isGrant(i)) {
        grantMisses++
        if (i >= n / 2) secondHalfGrantMisses++
      } else {
        denialMisses++
      }
    }
    return { grantMisses, denialMisses, secondHalfGrantMisses }
  }
  const contenders = {} as Record<Contender, DenialContender>
  for (const c of CONTENDERS) {
    outcome.fill(0)
    let m: Measured
    if (c === 'tinylfu' || c === 'clock') {
      const r = await engineDenials(c, layout, DENIAL_CAPACITY, outcome)
      policies[c] = r.status
      m = measured(r.hits, n, r.ms)
      const counted = misses()
      // The resolver's own count is the measure; the outcome array must agree with it.
      if (counted.grantMisses !== r.grantCalls || counted.denialMisses !== r.denialCalls) throw new Error(`denials: ${c} resolver calls disagree with the misses seen`)
    } else if (c === 'lru') {
      m = lruRun(layout.pairs, trace, DENIAL_CAPACITY, outcome)
    } else {
      m = beladyRun(trace, DENIAL_CAPACITY, layout.pairs.length, outcome)
    }
    const { grantMisses, denialMisses, secondHalfGrantMisses } = misses()
    contenders[c] = { ...m, grantMisses, denialMisses, secondHalfGrantMisses, extraGrantMisses: grantMisses - distinctGrantKeys }
    log(`  ${c}: ${fixed(m.hitPercent)} %, ${int(grantMisses - distinctGrantKeys)} extra grant misses, in ${int(m.ms)} ms`)
  }
  return { grantUsers: GRANT_USERS, idsPerUser: IDS_PER_USER, denials, grantRequests, distinctGrantKeys, capacity: DENIAL_CAPACITY, contenders }
}

// -------------------------------------------------------------------- run

export async function run (options: HitRatioBenchOptions = {}): Promise<HitRatioBenchResult> {
  const requests = options.requests ?? DEFAULT_REQUESTS
  const denials = options.denials ?? DEFAULT_DENIALS
  const burst = options.scanBurst ?? SCAN_BURST
  const only = new Set<TraceName>(options.only ?? TRACE_NAMES)
  for (const name of only) if (!(TRACE_NAMES as readonly string[]).includes(name)) throw new Error(`unknown trace ${JSON.stringify(name)} (${TRACE_NAMES.join(', ')})`)
  if (!Number.isInteger(requests) || requests < 1) throw new RangeError(`requests must be a positive integer, got ${requests}`)
  const log = options.log ?? (() => {})
  const runInfo = startRun(['lru-cache'])
  const policies: Record<Policy, PolicyStatus> = { tinylfu: 'rejected', clock: 'rejected' }

  const scanRequests = only.has('scan') ? scanShape(requests, burst).bursts * burst : 0
  const needsZipf = only.has('zipf-0.8') || only.has('zipf-0.8-50k') || only.has('scan') || only.has('zipf-1.0')
  let pairs: Pair[] = []
  if (needsZipf) {
    log(`pairs: makePairs(${int(ZIPF_KEYS + scanRequests)}, ${SEEDS.pairs})`)
    pairs = makePairs(ZIPF_KEYS + scanRequests, SEEDS.pairs)
  }
  let zipf08: Uint32Array | undefined
  const zipf08Trace = (): Uint32Array => {
    if (zipf08 === undefined) {
      log(`trace: Zipf 0.8, ${int(requests)} requests over ${int(ZIPF_KEYS)} keys, seed ${SEEDS.zipf08}`)
      zipf08 = zipfTrace(ZIPF_KEYS, requests, 0.8, SEEDS.zipf08)
    }
    return zipf08
  }

  const traces: TraceResult[] = []
  const go = (spec: TraceSpec): void => {
    log(`${spec.name}: ${spec.description}`)
    traces.push(runTrace(spec, policies, log))
  }
  const zipfText = (skew: number, seed: number, capacity: number): string =>
    `Zipf ${skew.toFixed(1)}, ${int(requests)} requests over ${int(ZIPF_KEYS)} keys (seed ${seed}), capacity ${int(capacity)}`
  if (only.has('zipf-0.8')) go({ name: 'zipf-0.8', description: zipfText(0.8, SEEDS.zipf08, 10_000), trace: zipf08Trace(), pairs, keySpace: ZIPF_KEYS, capacity: 10_000 })
  if (only.has('zipf-0.8-50k')) go({ name: 'zipf-0.8-50k', description: zipfText(0.8, SEEDS.zipf08, 50_000), trace: zipf08Trace(), pairs, keySpace: ZIPF_KEYS, capacity: 50_000 })
  if (only.has('scan')) {
    const scan = scanTrace(zipf08Trace(), requests, burst, ZIPF_KEYS)
    const description = `the Zipf 0.8 trace (seed ${SEEDS.zipf08}) with ${scan.bursts} bursts of ${int(burst)} one-shot keys ` +
      `(${int(scan.scanRequests)} requests, ${fixed((scan.scanRequests / requests) * 100, 0)} %) after a warm-up of ${int(scan.warmup)}, ` +
      `${int(burst)} Zipf requests after each, capacity 10,000`
    go({ name: 'scan', description, trace: scan.trace, pairs, keySpace: scan.keySpace, capacity: 10_000, scan })
  }
  zipf08 = undefined
  if (only.has('zipf-1.0')) {
    log(`trace: Zipf 1.0, ${int(requests)} requests over ${int(ZIPF_KEYS)} keys, seed ${SEEDS.zipf10}`)
    go({ name: 'zipf-1.0', description: zipfText(1.0, SEEDS.zipf10, 10_000), trace: zipfTrace(ZIPF_KEYS, requests, 1.0, SEEDS.zipf10), pairs, keySpace: ZIPF_KEYS, capacity: 10_000 })
  }
  pairs = []
  if (only.has('perf-2k') || only.has('perf-10k')) {
    log(`trace: the perf workload, ${int(requests)} requests, seed ${SEEDS.perf}`)
    const perf = perfTrace(requests, SEEDS.perf)
    const text = (capacity: number): string => `examples/perf.ts's workload: ${int(perf.views)} page views of ${VIEW_MIN}-${VIEW_MAX} requests, ` +
      `${PERF_CONCURRENCY} at once (seed ${SEEDS.perf}), ${int(requests)} requests, capacity ${int(capacity)}`
    for (const [name, capacity] of [['perf-2k', 2000], ['perf-10k', 10_000]] as const) {
      if (only.has(name)) go({ name, description: text(capacity), trace: perf.trace, pairs: perf.pairs, keySpace: perf.pairs.length, capacity, perf })
    }
  }
  let denialResult: DenialResult | undefined
  if (only.has('denials')) {
    log(`denials: ${int(GRANT_USERS)} users x ${IDS_PER_USER} granted ids, one user checking ${int(denials)} distinct denied ids, capacity ${int(DENIAL_CAPACITY)}, seed ${SEEDS.denials}`)
    denialResult = await runDenials(denials, policies, log)
  }

  return {
    ...runInfo(),
    seeds: SEEDS,
    policies,
    requests,
    traces,
    denials: denialResult,
    targets: targetsOf(traces, denialResult, policies)
  }
}

// ---------------------------------------------------------------- targets

function points (x: number): string {
  return `${x >= 0 ? '+' : ''}${fixed(x)}`
}

function targetsOf (traces: TraceResult[], denials: DenialResult | undefined, policies: Record<Policy, PolicyStatus>): Target[] {
  const applied = policies.tinylfu !== 'rejected'
  const note = applied ? '' : '; evictionPolicy rejected by this build: the engine ran its default policy'
  const targets: Target[] = []
  const gain = (name: TraceName, title: string, atLeast: number): void => {
    const t = traces.find((r) => r.name === name)
    if (t === undefined) {
      targets.push({ name: title, pass: null, detail: `trace ${name} not run` })
      return
    }
    targets.push({
      name: title,
      pass: applied && t.tinylfuMinusLru >= atLeast,
      detail: `${fixed(t.contenders.tinylfu.hitPercent)} % vs ${fixed(t.contenders.lru.hitPercent)} % (${points(t.tinylfuMinusLru)} points; >= +${atLeast})${note}`
    })
  }
  gain('zipf-0.8', 'Zipf 0.8, 10,000 entries: TinyLFU hit ratio over lru-cache', ZIPF08_GAIN_TARGET)
  gain('scan', 'Zipf 0.8 with a 25% one-shot scan, 10,000 entries: TinyLFU over lru-cache', SCAN_GAIN_TARGET)
  const scan = traces.find((r) => r.name === 'scan')?.scan
  if (scan === undefined) {
    targets.push({ name: 'the 100 hottest keys survive each scan burst (TinyLFU)', pass: null, detail: 'trace scan not run' })
  } else {
    const h = scan.hot.tinylfu
    targets.push({
      name: 'the 100 hottest keys survive each scan burst (TinyLFU)',
      pass: applied && h.firstRequestHitPercent >= HOT_SURVIVAL_TARGET,
      detail: `first request after a burst hits for ${fixed(h.firstRequestHitPercent, 1)} % of ${int(h.firstRequests)} (>= ${HOT_SURVIVAL_TARGET} %; lru-cache ${fixed(scan.hot.lru.firstRequestHitPercent, 1)} %)${note}`
    })
  }
  gain('zipf-1.0', 'Zipf 1.0, 10,000 entries: TinyLFU hit ratio over lru-cache', ZIPF10_GAIN_TARGET)
  const denialTitle = 'denials do not crowd out grants: TinyLFU grant reloads <= 1% of CLOCK\'s once warm (second half), <= 5% over the whole trace'
  if (denials === undefined) {
    targets.push({ name: denialTitle, pass: null, detail: 'scenario denials not run' })
  } else {
    const t = denials.contenders.tinylfu
    const c = denials.contenders.clock
    // The cold start is not free: while every key has been seen once, a newly loaded grant ties with the grant it would replace and loses.
    const warm = t.secondHalfGrantMisses === 0 || t.secondHalfGrantMisses <= c.secondHalfGrantMisses * DENIAL_EXTRA_SHARE_TARGET
    const whole = t.extraGrantMisses <= c.extraGrantMisses * DENIAL_EXTRA_SHARE_COLD_TARGET
    targets.push({
      name: denialTitle,
      pass: applied && warm && whole,
      detail: `second half ${int(t.secondHalfGrantMisses)} vs ${int(c.secondHalfGrantMisses)} grant resolver calls (<= ${int(Math.floor(c.secondHalfGrantMisses * DENIAL_EXTRA_SHARE_TARGET))}, or 0); ` +
        `whole trace ${int(t.extraGrantMisses)} vs ${int(c.extraGrantMisses)} beyond the first load (<= ${int(Math.floor(c.extraGrantMisses * DENIAL_EXTRA_SHARE_COLD_TARGET))})${note}`
    })
  }
  return targets
}

// ----------------------------------------------------------------- report

const LABEL: Record<Contender, string> = { tinylfu: 'engine tinylfu', clock: 'engine clock', lru: 'lru-cache', belady: 'Belady (OPT)' }

function policyText (policies: Record<Policy, PolicyStatus>): string {
  const say = (p: Policy): string => policies[p] === 'applied'
    ? `'${p}' applied`
    : policies[p] === 'accepted' ? `'${p}' accepted (not shown in cache.options)` : `'${p}' rejected (FST_AUTHZ_OPTIONS: the engine ran its default policy)`
  return `evictionPolicy ${say('tinylfu')}, ${say('clock')}`
}

export function formatResult (r: HitRatioBenchResult): string {
  const out: string[] = []
  out.push(`Machine: ${describeMachine(r.machine, r.packages)}`)
  out.push('')
  out.push(targetsTable(r.targets))
  out.push('')
  const s = r.seeds
  out.push(`Seeds: pairs ${s.pairs} (makePairs), Zipf 0.8 ${s.zipf08}, Zipf 1.0 ${s.zipf10}, perf ${s.perf} (0x${s.perf.toString(16)}), denials ${s.denials}, engine random source ${s.engine}. ${policyText(r.policies)}.`)
  if (r.traces.length > 0) {
    out.push('')
    out.push('### Hit ratio: every request counted, from cold, insert on every miss')
    out.push('')
    out.push(table(
      ['trace', 'requests', 'distinct keys', 'capacity', 'tinylfu %', 'clock %', 'lru-cache %', 'Belady %', 'tinylfu - lru', 'clock - lru', 'ms tinylfu / clock / lru / Belady'],
      r.traces.map((t) => [
        t.name,
        int(t.requests),
        int(t.distinctKeys),
        int(t.capacity),
        fixed(t.contenders.tinylfu.hitPercent),
        fixed(t.contenders.clock.hitPercent),
        fixed(t.contenders.lru.hitPercent),
        fixed(t.contenders.belady.hitPercent),
        points(t.tinylfuMinusLru),
        points(t.clockMinusLru),
        CONTENDERS.map((c) => int(t.contenders[c].ms)).join(' / ')
      ]),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']
    ))
    out.push('')
    for (const t of r.traces) out.push(`- ${t.name}: ${t.description}`)
  }
  const scanTrace = r.traces.find((t) => t.scan !== undefined)
  if (scanTrace?.scan !== undefined) {
    const sc = scanTrace.scan
    out.push('')
    out.push(`### Scan: do the ${HOT_KEYS} hottest keys (ranks 0-${HOT_KEYS - 1}) survive ${sc.bursts} bursts of ${int(sc.burst)} one-shot keys?`)
    out.push('')
    out.push(`In the ${int(sc.burst)} Zipf requests after each burst: the first request of each hot key that comes up (a hit means it was still cached when the burst ended), and every request to a hot key; hot keys never requested before the window are left out. Baseline: the first-request measure in ${BASELINE_WINDOWS} windows of ${int(sc.burst)} requests at the end of the warm-up, no burst before them.`)
    out.push('')
    out.push(table(['contender', 'first request after a burst hits', 'every hot-key request after a burst', 'baseline (no burst)'], CONTENDERS.map((c) => {
      const h = sc.hot[c]
      return [LABEL[c], `${fixed(h.firstRequestHitPercent, 1)} % of ${int(h.firstRequests)}`, `${fixed(h.hitPercent, 1)} % of ${int(h.requests)}`, `${fixed(h.baselineFirstRequestHitPercent, 1)} %`]
    }), ['l', 'r', 'r', 'r']))
  }
  const perf = r.traces.filter((t) => t.views !== undefined)
  if (perf.length > 0) {
    out.push('')
    out.push('### Perf workload: the first request of each page view (the other 19-59 hit under any policy)')
    out.push('')
    out.push(table(['trace', 'views', ...CONTENDERS.map((c) => `${LABEL[c]} %`)], perf.map((t) => [
      t.name,
      int(t.views?.views ?? 0),
      ...CONTENDERS.map((c) => fixed(t.views?.firstRequestHitPercent[c] ?? NaN))
    ]), ['l', 'r', 'r', 'r', 'r', 'r']))
  }
  const d = r.denials
  if (d !== undefined) {
    out.push('')
    out.push(`### Denials must not crowd out grants: ${int(d.grantUsers)} users x ${d.idsPerUser} granted ids, one user checking ${int(d.denials)} distinct denied ids, capacity ${int(d.capacity)}`)
    out.push('')
    out.push(`${int(d.grantRequests)} grant checks over ${int(d.distinctGrantKeys)} grant keys, alternating with the ${int(d.denials)} denial checks. For the engine, misses are resolver calls (\`getOrLoad\`); "beyond the first load" takes the ${int(d.distinctGrantKeys)} cold loads off.`)
    out.push('')
    out.push(table(['contender', 'hit %', 'grant misses beyond the first load', 'of them in the second half', 'grant misses', 'denial misses', 'ms'], CONTENDERS.map((c) => {
      const x = d.contenders[c]
      return [LABEL[c], fixed(x.hitPercent), int(x.extraGrantMisses), int(x.secondHalfGrantMisses), int(x.grantMisses), int(x.denialMisses), int(x.ms)]
    }), ['l', 'r', 'r', 'r', 'r', 'r', 'r']))
  }
  out.push('')
  out.push(`Total ${(r.durationMs / 1000).toFixed(1)} s`)
  return out.join('\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      requests: { type: 'string' },
      denials: { type: 'string' },
      only: { type: 'string' }
    }
  })
  const result = await run({
    requests: values.requests === undefined ? undefined : Number(values.requests),
    denials: values.denials === undefined ? undefined : Number(values.denials),
    only: values.only === undefined ? undefined : values.only.split(',').map((name) => name.trim()) as TraceName[],
    log: (line) => process.stderr.write(line + '\n')
  })
  process.stdout.write(formatResult(result) + '\n\n')
  process.stdout.write(JSON.stringify(result, null, 2) + '\n')
}
