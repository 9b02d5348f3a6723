/**
 * The seed's performance test, through the real plugin and the example
 * service's SQL resolvers (PGlite), with a SIMULATED backend latency on
 * every resolver call (default 120 ms, the cost of a check against a real
 * authorization service). Run by `npx authz-cache perf` / `npm run perf`.
 *
 * Workloads (a seeded PRNG makes every run the same traffic; every request
 * goes through `app.inject`: JWT verification, the route's check, the
 * handler):
 * - `projects` (the default): 5,000 users in 100 teams, 3 projects a team,
 *   20,000 generations. A session is a user (Zipf, s = 1.1) opening a
 *   project of their team (Zipf, s = 1.0, so teammates share projects):
 *   `GET /projects/:id`, then the project's list page
 *   `GET /projects/:id/generations` (50 generations, one batch check), then
 *   1-4 generations of the page (Zipf over the page), each with a burst of
 *   20-60 requests (media, polling). Between pages a user thinks `thinkMs`.
 * - `dashboard`: 2,000 users in 10 big teams, 5 projects a team, 10,000
 *   generations. A session is a user opening their team's dashboard: the
 *   first page (20) of every project of the team, one list request each,
 *   then 1-3 generations of those pages with bursts as above.
 * - `scroll`: 3,000 users in 60 teams, 4 projects a team, 24,000
 *   generations. A session is a user (Zipf, s = 0.9) scrolling one project
 *   of their team (uniform): pages of 24 at offsets 0, 24, 48, ... (2-5
 *   pages), opening 0-2 generations of each page with bursts as above.
 * - `views` (the workload of earlier versions, kept to compare): a view is
 *   a user (Zipf, s = 1.1) opening a generation of their team (Zipf,
 *   s = 1.2, over the team's 200) with a burst of 20-60 requests, no
 *   thinking.
 * `concurrency` sessions run at once.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { performance } from 'node:perf_hooks'
import { buildExampleApp, notificationsApplied } from './app.js'
import { seedMany, type BulkSeed } from './db.js'
import { createResolvers, single } from './resolvers.js'

export const WORKLOADS = ['projects', 'dashboard', 'scroll', 'views'] as const
export type WorkloadName = typeof WORKLOADS[number]

export interface PerfOptions {
  config: 'development' | 'production'
  /** Requests to make. */
  iterations: number
  latencyMs: number
  concurrency: number
  /** Default `projects`. */
  workload?: WorkloadName
  /** Pause between the pages of a session, in ms (not counted in any request's time). Default 300; the `views` workload does not think. */
  thinkMs?: number
  /** Predictive warming and refresh-ahead (`warmingEnabled`); default: the preset's. */
  warming?: boolean
  /** Batch resolvers (`many`) for generation and project; default true. */
  batching?: boolean
  /**
   * Requests of the same workload run first and not measured, so that the
   * numbers are the steady state's, not a cold start's (every resource's
   * first check ever is a miss no cache avoids). Default: `iterations`;
   * 0 measures from a cold cache.
   */
  warmup?: number
  /** PostgreSQL (schema `authz_perf`, recreated, dropped afterwards) instead of the embedded PGlite. */
  databaseUrl?: string
}

export interface PerfResult {
  /** Requests made. */
  checks: number
  failures: number
  averageMs: number
  p50Ms: number
  p99Ms: number
  /** Decisions looked up (a list request looks up each of its generations). */
  decisions: number
  hitRatePercent: number
  /** Calls to the simulated backend (a batch query is one call). */
  backendCalls: number
  /** Decisions on a resource no user had been checked on before (in the warm-up or the run): misses no cache avoids. */
  firstEverChecks: number
  /** The hit rate with every other miss avoided: 100% less the first-ever checks' share. */
  hitRateCeilingPercent: number
  warming: { predicted: number, used: number, wasted: number }
  uncachedAverageMs: number
  reductionPercent: number
  cacheHitAverageMs: number
  cacheHitP99Ms: number
  targetAccessTimeMs: number
  targetHitRatePercent: number
  meetsAccessTime: boolean
  meetsHitRate: boolean
}

const BURST_MIN = 20
const BURST_MAX = 60
const UNCACHED_SAMPLES = 16
export const DEFAULT_THINK_MS = 300

/** A page of a session: `requests` requests to `url`, as `user`. */
export interface Page {
  url: string
  requests: number
}

export interface Workload {
  describe: string
  seed: { users: number, teams: number, generations: number, projectsPerTeam: number }
  thinks: boolean
  /** The next session: who, and the pages in order. */
  session: (seed: BulkSeed, random: () => number) => { user: number, pages: Page[] }
  /** A generation and user the workload would check (for the uncached measurement). */
  sample: (seed: BulkSeed, random: () => number) => { user: number, generation: number }
}

const burst = (random: () => number): number => BURST_MIN + Math.floor(random() * (BURST_MAX - BURST_MIN + 1))

/**
 * The first page (`size`) of project `p`'s list, as `GET /projects/:id/generations`
 * orders it (newest first, then by id: seedMany writes every row at one
 * `created_at`, so by id). Generation `j` is in project `j % projects`.
 */
function pageOf (seed: BulkSeed, project: number, size: number, offset = 0): number[] {
  const all: Array<{ j: number, id: string }> = []
  for (let j = project; j < seed.generations; j += seed.projects) all.push({ j, id: seed.generationId(j) })
  all.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  return all.slice(offset, offset + size).map((g) => g.j)
}

export function workloadOf (name: WorkloadName): Workload {
  if (name === 'views') {
    let pickUser: (() => number) | undefined
    let pickGeneration: (() => number) | undefined
    const pickers = (seed: BulkSeed, random: () => number): [() => number, () => number] => {
      pickUser ??= zipf(seed.users, 1.1, random)
      pickGeneration ??= zipf(Math.floor(seed.generations / seed.teams), 1.2, random)
      return [pickUser, pickGeneration]
    }
    const pick = (seed: BulkSeed, random: () => number): { user: number, generation: number } => {
      const [user, generation] = pickers(seed, random)
      const u = user()
      // Generation j is in team j % teams (seedMany's layout): the user's team's k-th generation.
      return { user: u, generation: seed.teamOfUser(u) + seed.teams * generation() }
    }
    return {
      describe: 'views of 20-60 requests to one generation, Zipf users (s=1.1) and generations (s=1.2)',
      seed: { users: 5000, teams: 100, generations: 20_000, projectsPerTeam: 3 },
      thinks: false,
      session: (seed, random) => {
        const { user, generation } = pick(seed, random)
        return { user, pages: [{ url: `/generations/${seed.generationId(generation)}`, requests: burst(random) }] }
      },
      sample: pick
    }
  }
  if (name === 'projects') {
    let pickUser: (() => number) | undefined
    let pickProject: (() => number) | undefined
    return {
      describe: 'sessions: a project, its list page (50), then 1-4 of its generations with 20-60 requests each; Zipf users (s=1.1), projects of the team (s=1.0)',
      seed: { users: 5000, teams: 100, generations: 20_000, projectsPerTeam: 3 },
      thinks: true,
      session: (seed, random) => {
        pickUser ??= zipf(seed.users, 1.1, random)
        pickProject ??= zipf(seed.projects / seed.teams, 1.0, random)
        const user = pickUser()
        // Project p is in team p % teams.
        const project = seed.teamOfUser(user) + seed.teams * pickProject()
        const page = pageOf(seed, project, 50)
        const opens = 1 + Math.floor(random() * 4)
        const pickOpen = zipf(page.length, 1.0, random)
        const projectId = seed.projectId(project)
        const pages: Page[] = [{ url: `/projects/${projectId}`, requests: 1 }, { url: `/projects/${projectId}/generations`, requests: 1 }]
        for (let i = 0; i < opens; i++) pages.push({ url: `/generations/${seed.generationId(page[pickOpen()])}`, requests: burst(random) })
        return { user, pages }
      },
      sample: (seed, random) => {
        const user = Math.floor(random() * seed.users)
        const project = seed.teamOfUser(user) + seed.teams * Math.floor(random() * (seed.projects / seed.teams))
        return { user, generation: pageOf(seed, project, 50)[0] }
      }
    }
  }
  if (name === 'scroll') {
    let pickUser: (() => number) | undefined
    return {
      describe: 'scrolling: pages of 24 of one project (2-5 pages), 0-2 generations opened a page with 20-60 requests each; Zipf users (s=0.9), projects uniform',
      seed: { users: 3000, teams: 60, generations: 24_000, projectsPerTeam: 4 },
      thinks: true,
      session: (seed, random) => {
        pickUser ??= zipf(seed.users, 0.9, random)
        const user = pickUser()
        const project = seed.teamOfUser(user) + seed.teams * Math.floor(random() * (seed.projects / seed.teams))
        const projectId = seed.projectId(project)
        const pages: Page[] = []
        const scrolled = 2 + Math.floor(random() * 4)
        for (let k = 0; k < scrolled; k++) {
          pages.push({ url: `/projects/${projectId}/generations?limit=24&offset=${k * 24}`, requests: 1 })
          const page = pageOf(seed, project, 24, k * 24)
          const opens = Math.floor(random() * 3)
          for (let i = 0; i < opens && page.length > 0; i++) pages.push({ url: `/generations/${seed.generationId(page[Math.floor(random() * page.length)])}`, requests: burst(random) })
        }
        return { user, pages }
      },
      sample: (seed, random) => {
        const user = Math.floor(random() * seed.users)
        return { user, generation: pageOf(seed, seed.teamOfUser(user), 24)[0] }
      }
    }
  }
  let pickUser: (() => number) | undefined
  return {
    describe: 'team dashboards: the first page (20) of each of the team\'s 5 projects, then 1-3 of those generations with 20-60 requests each; 10 teams of 200 users, Zipf users (s=1.1)',
    seed: { users: 2000, teams: 10, generations: 10_000, projectsPerTeam: 5 },
    thinks: true,
    session: (seed, random) => {
      pickUser ??= zipf(seed.users, 1.1, random)
      const user = pickUser()
      const team = seed.teamOfUser(user)
      const pages: Page[] = []
      const shown: number[] = []
      for (let p = team; p < seed.projects; p += seed.teams) {
        pages.push({ url: `/projects/${seed.projectId(p)}/generations?limit=20`, requests: 1 })
        shown.push(...pageOf(seed, p, 20))
      }
      const opens = 1 + Math.floor(random() * 3)
      for (let i = 0; i < opens; i++) pages.push({ url: `/generations/${seed.generationId(shown[Math.floor(random() * shown.length)])}`, requests: burst(random) })
      return { user, pages }
    },
    sample: (seed, random) => {
      const user = Math.floor(random() * seed.users)
      return { user, generation: pageOf(seed, seed.teamOfUser(user), 20)[0] }
    }
  }
}

/** mulberry32: a small seeded PRNG, so every run replays the same workload. */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A Zipf(s) sampler over 0..n-1 (0 the most frequent). */
function zipf (n: number, s: number, random: () => number): () => number {
  const cdf = new Float64Array(n)
  let total = 0
  for (let i = 0; i < n; i++) {
    total += 1 / (i + 1) ** s
    cdf[i] = total
  }
  return () => {
    const r = random() * total
    let lo = 0
    let hi = n - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (cdf[mid] < r) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

function quantile (sorted: Float64Array, q: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]
}

const ms = (value: number): string => value < 0.1 ? value.toFixed(4) : value.toFixed(2)
const mark = (ok: boolean): string => ok ? '✅' : '❌'

/** Runs the workload and prints the seed's lines through `out`; true when every target is met. */
export async function runPerf (options: PerfOptions, out: (line: string) => void): Promise<boolean> {
  const result = await measure(options, out)
  out(`${mark(result.meetsAccessTime)} Average response time: ${ms(result.averageMs)} ms per check (target <= ${result.targetAccessTimeMs} ms)`)
  out(`${mark(result.meetsHitRate)} Cache hit rate: ${result.hitRatePercent.toFixed(2)}% (target >= ${result.targetHitRatePercent}%)`)
  out(`   per check (one request): p50 ${ms(result.p50Ms)} ms, p99 ${ms(result.p99Ms)} ms; ${result.failures} of ${result.checks} checks did not answer 200`)
  out(`   decisions looked up: ${result.decisions}, of which ${result.firstEverChecks} on a resource no user was checked on before (the best hit rate possible: ${result.hitRateCeilingPercent.toFixed(2)}%)`)
  out(`   backend calls: ${result.backendCalls}; predictive warming: ${result.warming.predicted} predicted, ${result.warming.used} used, ${result.warming.wasted} wasted`)
  out(`   cache hit path (the plugin's sampled stats): ${ms(result.cacheHitAverageMs)} ms average, ${ms(result.cacheHitP99Ms)} ms p99`)
  out(`   uncached check (SIMULATED ${options.latencyMs} ms backend + SQL): ${ms(result.uncachedAverageMs)} ms -> ${result.reductionPercent.toFixed(2)}% less time per check with the cache (${(result.uncachedAverageMs / Math.max(result.averageMs, 1e-9)).toFixed(1)}x faster)`)
  const ok = result.meetsAccessTime && result.meetsHitRate && result.failures === 0
  out(ok ? '✅ All performance targets met' : '❌ Some performance targets were missed')
  return ok
}

/** The measurement alone (for tests and benchmarks). */
export async function measure (options: PerfOptions, out: (line: string) => void = () => {}): Promise<PerfResult> {
  const workloadName = options.workload ?? 'projects'
  const workload = workloadOf(workloadName)
  const thinkMs = workload.thinks ? options.thinkMs ?? DEFAULT_THINK_MS : 0
  let backendCalls = 0
  // Resources the backend was ever asked about (by any user): a resource's first check ever is a miss no cache avoids.
  const everAsked = new Set<string>()
  let firstEver = 0
  const { app, db } = await buildExampleApp({
    databaseUrl: options.databaseUrl,
    schema: 'authz_perf',
    reseed: true,
    dropSchemaOnClose: true,
    preset: options.config,
    latencyMs: options.latencyMs,
    batch: options.batching ?? true,
    warmingEnabled: options.warming,
    onCall: (kind, ids) => {
      backendCalls++
      for (const id of ids) {
        const resource = `${kind}:${id}`
        if (!everAsked.has(resource)) {
          everAsked.add(resource)
          firstEver++
        }
      }
    }
  })
  try {
    const seed = await seedMany(db, workload.seed)
    // The seed's rows notified the cache (./db.ts triggers): those invalidations land before the clock starts.
    await notificationsApplied(app, db)
    const warming = app.authz.options.warmingEnabled
    out(`fastify-authz-cache perf: preset ${options.config}, ${options.iterations} checks measured after ${options.warmup ?? options.iterations} of warm-up, ${options.concurrency} concurrent sessions, SIMULATED backend latency ${options.latencyMs} ms`)
    out(`   workload ${workloadName}: ${seed.users} users, ${seed.teams} teams, ${seed.projects} projects, ${seed.generations} generations; ${workload.describe}${thinkMs > 0 ? `; ${thinkMs} ms thinking between pages` : ''}; batching ${options.batching ?? true ? 'on' : 'off'}, predictive warming ${warming ? 'on' : 'off'}; database ${db.label}`)
    backendCalls = 0

    const random = prng(0x5eed)
    const tokens = new Map<number, string>()
    const tokenOf = (user: number): string => {
      let token = tokens.get(user)
      if (token === undefined) {
        token = `Bearer ${app.jwt.sign({ sub: seed.userId(user) })}`
        tokens.set(user, token)
      }
      return token
    }

    // One stream of sessions: the warm-up takes the first `warmup` requests, the measurement the next `iterations`.
    const warmup = options.warmup ?? options.iterations
    const durations = new Float64Array(options.iterations)
    let issued = 0
    let failures = 0
    const run = async (total: number, record: boolean): Promise<void> => {
      issued = 0
      const worker = async (): Promise<void> => {
        while (issued < total) {
          const { user, pages } = workload.session(seed, random)
          const headers = { authorization: tokenOf(user) }
          for (let p = 0; p < pages.length && issued < total; p++) {
            if (p > 0 && thinkMs > 0) await sleep(thinkMs)
            for (let i = 0; i < pages[p].requests && issued < total; i++) {
              const slot = issued++
              const start = performance.now()
              const res = await app.inject({ method: 'GET', url: pages[p].url, headers })
              if (record) durations[slot] = performance.now() - start
              if (res.statusCode !== 200) failures++
            }
          }
        }
      }
      await Promise.all(Array.from({ length: options.concurrency }, worker))
    }
    if (warmup > 0) await run(warmup, false)
    failures = 0
    backendCalls = 0
    firstEver = 0
    const before = app.authz.getStats()
    await run(options.iterations, true)

    const stats = app.authz.getStats()
    const calls = backendCalls
    const firstEverChecks = firstEver
    const hits = stats.hits - before.hits
    const misses = stats.misses - before.misses
    const sorted = durations.slice().sort()
    let sum = 0
    for (const d of durations) sum += d
    const averageMs = sum / options.iterations
    const hitRatePercent = hits + misses === 0 ? 0 : hits / (hits + misses) * 100

    // The uncached path: the same resolver, called directly.
    const generation = single(createResolvers(db, { latencyMs: options.latencyMs }).generation)
    let uncached = 0
    for (let i = 0; i < UNCACHED_SAMPLES; i++) {
      const pick = workload.sample(seed, random)
      const start = performance.now()
      await generation({ kind: 'generation', userId: seed.userId(pick.user), id: seed.generationId(pick.generation), signal: new AbortController().signal })
      uncached += performance.now() - start
    }
    const uncachedAverageMs = uncached / UNCACHED_SAMPLES
    const targetAccessTimeMs = stats.performanceTargets.targetAccessTimeMs
    const targetHitRatePercent = stats.performanceTargets.targetHitRatePercent
    return {
      checks: options.iterations,
      failures,
      averageMs,
      p50Ms: quantile(sorted, 0.5),
      p99Ms: quantile(sorted, 0.99),
      decisions: hits + misses,
      hitRatePercent,
      backendCalls: calls,
      firstEverChecks,
      hitRateCeilingPercent: hits + misses === 0 ? 0 : (1 - firstEverChecks / (hits + misses)) * 100,
      warming: {
        predicted: stats.warming.predicted - before.warming.predicted,
        used: stats.warming.used - before.warming.used,
        wasted: stats.warming.wasted - before.warming.wasted
      },
      uncachedAverageMs,
      reductionPercent: (1 - averageMs / uncachedAverageMs) * 100,
      cacheHitAverageMs: stats.averageAccessTimeMs,
      cacheHitP99Ms: stats.p99AccessTimeMs,
      targetAccessTimeMs,
      targetHitRatePercent,
      meetsAccessTime: averageMs <= targetAccessTimeMs,
      meetsHitRate: hitRatePercent >= targetHitRatePercent
    }
  } finally {
    await app.close()
    await db.close()
  }
}
